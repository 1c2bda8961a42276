/* train/: the data × tensor × pipeline grid (grid.h): coordinates from the world rank and one
 * communicator per group. */
#include "config.h"

#include "train/grid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int grid_check(int world_size, int T, int P, int nr_heads, int nr_layers, char *err, size_t errlen)
{
	if (T < 1 || P < 1) {
		snprintf(err, errlen,
			"--tensor-parallel %d and --pipeline-parallel %d must be at least 1", T, P);
		return -EINVAL;
	}
	if (world_size % (T * P) != 0) {
		snprintf(err, errlen,
			"%d rank(s) do not split into tensor %d x pipeline %d: the world size must be "
			"a multiple of %d (data x tensor x pipeline)",
			world_size, T, P, T * P);
		return -EINVAL;
	}
	if (nr_heads > 0 && nr_heads % T != 0) {
		snprintf(err, errlen,
			"--tensor-parallel %d does not divide the model's %d heads (each tensor rank "
			"takes whole heads)",
			T, nr_heads);
		return -EINVAL;
	}
	if (nr_layers > 0 && P > nr_layers) {
		snprintf(err, errlen,
			"--pipeline-parallel %d is more than the model's %d layers (each stage needs "
			"one)",
			P, nr_layers);
		return -EINVAL;
	}
	return 0;
}

/* The group of the ranks sharing color, in key order, into *use: the world, comm_self, or a
 * split into own. */
static int group(struct comm *world, int size, int color, int key, struct comm **use,
	struct comm *own, char *err, size_t errlen)
{
	if (size == world->world_size) {
		*use = world;
		return 0;
	}
	*use = own;
	if (size == 1) {
		comm_self(own);
		return 0;
	}
	if (!world->ops->split) {
		snprintf(err, errlen, "the %s collective has no groups", world->ops->name);
		return -EINVAL;
	}
	return world->ops->split(world, color, key, own, err, errlen);
}

int grid_init(struct grid *g, struct comm *world, int T, int P, char *err, size_t errlen)
{
	int rc, r = world->rank;
	memset(g, 0, sizeof(*g));
	g->T = T;
	g->P = P;
	g->D = world->world_size / (T * P);
	g->t = r % T;
	g->d = r / T % g->D;
	g->p = r / (T * g->D);
	/* every rank takes part in each split, in the same order (MPI_Comm_split is collective) */
	rc = group(world, g->D, g->p * T + g->t, g->d, &g->data, &g->own_data, err, errlen);
	if (rc == 0)
		rc = group(world, T, g->p * g->D + g->d, g->t, &g->tensor, &g->own_tensor, err,
			errlen);
	if (rc == 0)
		rc = group(world, P, g->d * T + g->t, g->p, &g->pipeline, &g->own_pipeline, err,
			errlen);
	if (rc < 0)
		grid_done(g);
	return rc;
}

void grid_done(struct grid *g)
{
	struct comm *own[3] = { &g->own_data, &g->own_tensor, &g->own_pipeline };
	for (int i = 0; i < 3; i++)
		if (own[i]->ops && own[i]->ops->done) {
			own[i]->ops->done(own[i]);
			own[i]->ops = NULL;
		}
}

void grid_describe(const struct grid *g, int rank, char *buf, size_t len)
{
	snprintf(buf, len,
		"layout: data %d x tensor %d x pipeline %d; rank %d = data %d, tensor %d, stage %d",
		g->D, g->T, g->P, rank, g->d, g->t, g->p);
}
