/* train/: the data × tensor × pipeline grid of ranks (Megatron's layout): which group each rank
 * of the world belongs to, and a communicator per group. The trainer (train_cmd.c) builds it
 * after comm_init and before anything is read: the loader and ZeRO work in the data group, the
 * model's tensor-parallel all-reduces in the tensor group (model.h's gpt2_tp), the pipeline's
 * sends in the pipeline group. */
#ifndef FERRY_TRAIN_GRID_H
#define FERRY_TRAIN_GRID_H

#include <stddef.h>

#include "train/comm.h"

/* World = D × T × P ranks, tensor ranks adjacent (they talk most, and on one node share
 * memory), then data, then pipeline:
 *
 *	rank = (p * D + d) * T + t
 *
 * The data group of a rank: the D ranks with its (t, p), ordered by d; the tensor group: the T
 * ranks with its (d, p), ordered by t; the pipeline group: the P ranks with its (d, t), ordered
 * by stage p (stage 0 holds the embedding, stage P - 1 the head). Each group's rank is the
 * coordinate: data->rank == d, tensor->rank == t, pipeline->rank == p.
 *
 * The communicators: a group of one is comm_self (no MPI call), a group of the whole world is
 * the world's own struct comm (the 1-D layouts keep their bits and their buckets' requests),
 * any other an ops->split of the world. Fixed after grid_init; grid_done frees the splits. */
struct grid {
	int D, T, P; /* the group sizes: --tensor-parallel T, --pipeline-parallel P, D the rest */
	int d, t, p; /* this rank's coordinates */
	struct comm *data, *tensor, *pipeline; /* world, or own_* below */
	struct comm own_data, own_tensor, own_pipeline;
};

/* Whether world ranks split into tensor T and pipeline P of a model of nr_heads heads and
 * nr_layers layers (0: not known yet, not checked). 0, or -EINVAL with one line in err. */
int grid_check(int world_size, int T, int P, int nr_heads, int nr_layers, char *err, size_t errlen);
/* The grid of world (grid_check passed): the coordinates and the groups' communicators. A
 * collective of every rank. 0, or -errno with one line in err. */
int grid_init(struct grid *g, struct comm *world, int T, int P, char *err, size_t errlen);
void grid_done(struct grid *g);
/* "layout: data D x tensor T x pipeline P; rank R = data d, tensor t, stage p" */
void grid_describe(const struct grid *g, int rank, char *buf, size_t len);

#endif
