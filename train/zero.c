/* train/: ZeRO-1 and ZeRO-2 on CPU ranks (zero.h): the moments of one slice of the flat
 * parameters per rank, the gradients all-reduced or reduce-scattered, the update of the slice and
 * the all-gather of the parameters after it. */
#include "config.h"

#include "train/zero.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zero_init(struct zero *z, struct gpt2 *m, const struct comm *c, int stage, char *err,
	size_t errlen)
{
	size_t W = (size_t)c->world_size;

	memset(z, 0, sizeof(*z));
	z->stage = stage;
	z->rank = c->rank;
	z->world_size = c->world_size;
	z->nr_params = m->nr_params;
	z->slice = (m->nr_params + W - 1) / W;
	z->lo = (size_t)c->rank * z->slice;
	z->hi = z->lo + z->slice < m->nr_params ? z->lo + z->slice : m->nr_params;
	if (z->hi < z->lo)
		z->hi = z->lo;
	if (stage == 0) {
		z->slice = m->nr_params;
		z->lo = 0;
		z->hi = m->nr_params;
		return 0;
	}
	if (gpt2_pad_flat(m, W * z->slice) < 0)
		goto oom;
	z->m = calloc(z->slice, sizeof(float));
	z->v = calloc(z->slice, sizeof(float));
	if (!z->m || !z->v)
		goto oom;
	memcpy(z->m, m->m_memory + z->lo, (z->hi - z->lo) * sizeof(float));
	memcpy(z->v, m->v_memory + z->lo, (z->hi - z->lo) * sizeof(float));
	free(m->m_memory);
	free(m->v_memory);
	m->m_memory = NULL;
	m->v_memory = NULL;
	return 0;
oom:
	snprintf(err, errlen, "ZeRO stage %d: out of memory for a slice of %zu parameters", stage,
		z->slice);
	zero_done(z);
	return -ENOMEM;
}

void zero_done(struct zero *z)
{
	free(z->m);
	free(z->v);
	z->m = NULL;
	z->v = NULL;
}

void zero_memory(const struct zero *z, struct zero_memory *mem)
{
	size_t flat = z->stage == 0 ? z->nr_params : z->slice * (size_t)z->world_size;
	mem->params = flat * sizeof(float);
	mem->grads = flat * sizeof(float);
	mem->optimizer = 2 * z->slice * sizeof(float);
}

void zero_reduce_grads(struct zero *z, struct gpt2 *m, struct comm *c)
{
	if (z->stage < 2) {
		comm_allreduce_mean(c, m->grads_memory, m->nr_params);
		return;
	}
	/* backward never writes the padding, but a reduce-scatter may leave anything there */
	memset(m->grads_memory + z->nr_params, 0,
		(z->slice * (size_t)z->world_size - z->nr_params) * sizeof(float));
	c->ops->reduce_scatter_sum(c, m->grads_memory, z->slice);
	/* the same multiplication as comm_allreduce_mean's, so 2 ranks give the same bits */
	float inv = 1.0f / (float)c->world_size, *g = m->grads_memory + z->lo;
	if (c->world_size > 1)
		for (size_t i = 0; i < z->slice; i++)
			g[i] *= inv;
}

float zero_grad_norm(struct zero *z, const struct gpt2 *m, struct comm *c)
{
	/* stage 1 holds all the averaged gradients: stage 0's norm, bit for bit, no collective */
	if (z->stage < 2)
		return gpt2_grad_norm(m);
	/* each slice's sum in double, the sum of the slices in float (1e-7 relative), the same
	 * on every rank: one all-reduce */
	float sum = (float)gpt2_sum_squares(m->grads_memory + z->lo, z->hi - z->lo);
	c->ops->allreduce_sum(c, &sum, 1);
	return sqrtf(sum);
}

void zero_update(struct zero *z, struct gpt2 *m, struct comm *c, const struct adamw_config *opt,
	float lr, float grad_scale, int t)
{
	if (z->stage == 0) {
		gpt2_update(m, opt, lr, grad_scale, t);
		return;
	}
	gpt2_update_slice(m, opt, lr, grad_scale, t, z->lo, z->hi, m->grads_memory + z->lo, z->m,
		z->v);
	c->ops->allgather(c, m->params_memory, z->slice);
}

void zero_slice_bounds(size_t nr_params, int world_size, int rank, int stage, size_t *lo,
	size_t *hi)
{
	size_t W = (size_t)world_size, slice = (nr_params + W - 1) / W;
	if (stage == 0) {
		*lo = 0;
		*hi = nr_params;
		return;
	}
	*lo = (size_t)rank * slice;
	*hi = *lo + slice < nr_params ? *lo + slice : nr_params;
	if (*hi < *lo)
		*hi = *lo;
}
