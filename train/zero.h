/* train/: ZeRO stages 1 and 2 for the CPU trainer's data parallelism (DeepSpeed's names). Stage 1
 * shards the AdamW moments: each rank keeps m and v for its 1/W slice of the flat parameters,
 * updates only that slice and the parameters are then all-gathered. Stage 2 also reduce-scatters
 * the gradients, so each rank receives the sum of its own slice only, where stage 0 and 1
 * all-reduce all of them. Stage 0 is plain data parallelism: every rank keeps and updates
 * everything. The trainer (train_cmd.c) calls the same four steps for every stage, with the
 * data group's comm (grid.h): under tensor parallelism the flat parameters are the rank's
 * shards, and the slices are of those; on a pipeline the stage's (pp.c, which updates and
 * norms the slice itself: a stage updates only the parameters it uses). */
#ifndef FERRY_TRAIN_ZERO_H
#define FERRY_TRAIN_ZERO_H

#include <stddef.h>

#include "train/comm.h"
#include "train/model.h"

/* One per process, fixed after zero_init; m and v are the rank's own. */
struct zero {
	int stage; /* 0, 1 or 2 */
	int rank, world_size;
	size_t nr_params; /* the model's */
	/* floats per rank: nr_params rounded up to world_size equal slices. The model's params
	 * and grads are padded to world_size * slice (gpt2_pad_flat) with zeros, as the
	 * collectives move equal slices. */
	size_t slice;
	/* this rank's parameters [lo, hi): lo = rank * slice; hi <= nr_params (the last slices
	 * are short by the padding; one of a tiny model on many ranks may be empty) */
	size_t lo, hi;
	float *m,
		*v; /* (slice) the moments of [lo, hi), stage >= 1; NULL at stage 0 (the model's) */

	/* Overlap (stages 0 and 1, more than one rank, a comm with start_allreduce_sum): the
	 * last backward of a step starts each bucket's all-reduce as soon as backward has
	 * written all of it, the last layers first (model.h's grads_ready), and zero_reduce_grads
	 * waits for them. A bucket is layers [l, open_hi) of every per-layer tensor (a dozen
	 * ranges of the flat buffer, one per tensor), closed once it holds bucket_bytes or
	 * reaches layer 0; lnfw and lnfb join the first, wte and wpe make the last. Stage 2
	 * reduce-scatters in one collective after backward, as without overlap. */
	int overlap;         /* --overlap on, and the stage and comm allow it */
	size_t bucket_bytes; /* --bucket-kib */
	struct comm *comm;   /* set by zero_reduce_begin, for the hook */
	int armed;           /* the backward running starts the reductions */
	int open_hi;         /* the open bucket's layers end here */
	size_t open_bytes;   /* in the open bucket so far */
	double first_ms;     /* when the step's first bucket started */

	/* the last step's reduction, for the step line */
	struct zero_comm_stats {
		int nr_buckets;     /* reductions started (1: the single collective) */
		double exposed_ms;  /* time the step spent inside the collective calls */
		double inflight_ms; /* from the first start to the end of the wait */
	} stats;
};

/* Bytes one rank holds for the model's training state (activations aside). */
struct zero_memory {
	size_t params;    /* fp32 weights, the padding included */
	size_t grads;     /* fp32 gradients: backward writes all of them on every rank */
	size_t optimizer; /* AdamW's m and v: the whole at stage 0, one slice at 1 and 2 */
};

/* Takes over m's moments at stage >= 1: the rank's slice is copied out (of a resumed run's
 * whole moments, or the zeros of a new run) and m->m_memory and v_memory are freed, NULL from
 * then on. Before any view of m is made. 0, or -ENOMEM with one line in err. */
int zero_init(struct zero *z, struct gpt2 *m, const struct comm *c, int stage, char *err,
	size_t errlen);
void zero_done(struct zero *z);
void zero_memory(const struct zero *z, struct zero_memory *mem);

/* The ranks' gradients averaged: all of them on every rank (stage 0 and 1), or this rank's
 * slice at m->grads_memory + lo (stage 2; the rest is left undefined). With overlap it waits
 * for the buckets backward started, then scales as comm_allreduce_mean does: the same bits as
 * the single all-reduce on 2 ranks (a + b is b + a); on more ranks MPI may sum a bucket in
 * another order than the whole, so the last bit may differ (each way is reproducible).
 * Fills z->stats. */
void zero_reduce_grads(struct zero *z, struct gpt2 *m, struct comm *c);
/* --overlap (0: the single collective after backward, the simple twin) and --bucket-kib; the
 * overlap is kept only where it applies (see struct zero). After zero_init. */
void zero_set_overlap(struct zero *z, const struct comm *c, int overlap, size_t bucket_bytes);
/* Before the last backward of a step (with accumulation the others add up locally): arms
 * m's grads_ready hook, so that this backward starts the buckets' reductions. Nothing
 * without overlap. */
void zero_reduce_begin(struct zero *z, struct gpt2 *m, struct comm *c);
/* The global norm of the averaged gradients, the same on every rank: at stage 0 and 1 from all
 * of them (every rank has them); at stage 2 each rank's sum of squares over its slice, then one
 * all-reduce of that scalar. */
float zero_grad_norm(struct zero *z, const struct gpt2 *m, struct comm *c);
/* AdamW (gpt2_update's arguments): at stage 0 of everything; at 1 and 2 of this rank's slice,
 * then the parameters all-gathered, the same on every rank. */
void zero_update(struct zero *z, struct gpt2 *m, struct comm *c, const struct adamw_config *opt,
	float lr, float grad_scale, int t);

/* One array of slices (stage >= 1: mine, the rank's hi - lo floats, z->m or z->v) gathered
 * whole for a checkpoint written whole, on the data group's rank 0 alone: whole there holds
 * world_size * slice floats and receives every rank's slice in its place (the padding zero);
 * elsewhere it is NULL and the rank only sends its own. A backend without sendrecv (NCCL)
 * all-gathers instead, rank 0 keeping the result. A collective of c. 0, or -ENOMEM (that rank
 * alone: the caller ends the job). */
int zero_gather_slices(const struct zero *z, struct comm *c, const float *mine, float *whole);

/* The parameters [*lo, *hi) whose moments rank keeps at stage (zero_init's bounds, before a
 * zero_init): all of them at stage 0. A resume reads only those from a checkpoint. */
void zero_slice_bounds(size_t nr_params, int world_size, int rank, int stage, size_t *lo,
	size_t *hi);

#endif
