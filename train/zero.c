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
#include <time.h>

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

int zero_gather_slices(const struct zero *z, struct comm *c, const float *mine, float *whole)
{
	size_t n = z->slice, W = (size_t)c->world_size, own = z->hi - z->lo;
	if (!c->ops->sendrecv) { /* every rank a whole copy, rank 0's kept */
		float *all = calloc(n * W, sizeof(float));
		if (!all)
			return -ENOMEM;
		memcpy(all + z->lo, mine, own * sizeof(float));
		c->ops->allgather(c, all, n);
		if (c->rank == 0)
			memcpy(whole, all, n * W * sizeof(float));
		free(all);
		return 0;
	}
	if (c->rank != 0 && own == n) { /* a full slice goes as it is */
		c->ops->sendrecv(c, mine, n * sizeof(float), 0, NULL, 0, -1);
		return 0;
	}
	if (c->rank != 0) { /* a short slice's floats past hi are padding: zeros */
		float *buf = calloc(n, sizeof(float));
		if (!buf)
			return -ENOMEM;
		memcpy(buf, mine, own * sizeof(float));
		c->ops->sendrecv(c, buf, n * sizeof(float), 0, NULL, 0, -1);
		free(buf);
		return 0;
	}
	memset(whole, 0, n * W * sizeof(float));
	memcpy(whole + z->lo, mine, own * sizeof(float));
	for (size_t r = 1; r < W; r++)
		c->ops->sendrecv(c, NULL, 0, -1, whole + r * n, n * sizeof(float), (int)r);
	return 0;
}

void zero_memory(const struct zero *z, struct zero_memory *mem)
{
	size_t flat = z->stage == 0 ? z->nr_params : z->slice * (size_t)z->world_size;
	mem->params = flat * sizeof(float);
	mem->grads = flat * sizeof(float);
	mem->optimizer = 2 * z->slice * sizeof(float);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* buf (n) times 1/world_size: comm_allreduce_mean's multiplication, for the same bits */
static void scale_mean(const struct comm *c, float *buf, size_t n)
{
	float inv = 1.0f / (float)c->world_size;
	if (c->world_size > 1)
		for (size_t i = 0; i < n; i++)
			buf[i] *= inv;
}

void zero_set_overlap(struct zero *z, const struct comm *c, int overlap, size_t bucket_bytes)
{
	z->overlap = overlap && z->stage < 2 && c->world_size > 1 && c->ops->start_allreduce_sum;
	z->bucket_bytes = bucket_bytes;
}

static void grads_ready(void *arg, struct gpt2 *m, int layer);

void zero_reduce_begin(struct zero *z, struct gpt2 *m, struct comm *c)
{
	if (!z->overlap)
		return;
	z->comm = c;
	z->armed = 1;
	z->open_hi = m->config.nr_layers;
	z->open_bytes = 0;
	z->first_ms = 0.0;
	memset(&z->stats, 0, sizeof(z->stats));
	m->grads_ready = grads_ready;
	m->grads_ready_arg = z;
}

/* One reduction started, its time counted as exposed (the call itself is the rank's). */
static void start_range(struct zero *z, float *buf, size_t n)
{
	if (n == 0)
		return;
	if (z->first_ms == 0.0)
		z->first_ms = now_ms();
	z->comm->ops->start_allreduce_sum(z->comm, buf, n);
}

/* layers [lo, hi) of each per-layer tensor (wte and wpe before them, lnfw and lnfb after) */
static void start_layers(struct zero *z, struct gpt2 *m, int lo, int hi)
{
	int L = m->config.nr_layers;
	size_t off = m->param_sizes[0] + m->param_sizes[1];
	for (int k = 2; k < GPT2_NR_PARAM_TENSORS - 2; k++) {
		size_t per_layer = m->param_sizes[k] / (size_t)L;
		start_range(z, m->grads_memory + off + (size_t)lo * per_layer,
			(size_t)(hi - lo) * per_layer);
		off += m->param_sizes[k];
	}
	if (hi == L) /* lnfw and lnfb, adjacent at the end, final before layer L - 1 */
		start_range(z, m->grads_memory + off,
			m->param_sizes[GPT2_NR_PARAM_TENSORS - 2] +
				m->param_sizes[GPT2_NR_PARAM_TENSORS - 1]);
}

/* model.h's grads_ready: layer's gradients (or the embeddings') are final */
static void grads_ready(void *arg, struct gpt2 *m, int layer)
{
	struct zero *z = arg;
	double t0 = now_ms();
	int L = m->config.nr_layers;
	if (layer == GPT2_GRADS_EMBEDDINGS) {
		/* the whole embeddings: wte is the largest tensor and its reduction the one
		 * backward cannot hide */
		start_range(z, m->grads_memory, m->param_sizes[0] + m->param_sizes[1]);
		z->stats.nr_buckets++;
		z->stats.exposed_ms += now_ms() - t0;
		return;
	}
	for (int k = 2; k < GPT2_NR_PARAM_TENSORS - 2; k++)
		z->open_bytes += m->param_sizes[k] / (size_t)L * sizeof(float);
	if (z->open_bytes >= z->bucket_bytes || layer == 0) {
		start_layers(z, m, layer, z->open_hi);
		z->stats.nr_buckets++;
		z->open_hi = layer;
		z->open_bytes = 0;
	}
	/* MPI moves a nonblocking collective only inside MPI calls: one per layer */
	if (z->stats.nr_buckets > 0)
		z->comm->ops->progress(z->comm);
	z->stats.exposed_ms += now_ms() - t0;
}

void zero_reduce_grads(struct zero *z, struct gpt2 *m, struct comm *c)
{
	double t0 = now_ms();
	if (z->armed) {
		z->armed = 0;
		m->grads_ready = NULL;
		c->ops->wait_all(c);
		double t1 = now_ms();
		z->stats.exposed_ms += t1 - t0;
		z->stats.inflight_ms = z->first_ms > 0.0 ? t1 - z->first_ms : 0.0;
		scale_mean(c, m->grads_memory, m->nr_params);
		return;
	}
	memset(&z->stats, 0, sizeof(z->stats));
	if (c->world_size == 1)
		return;
	z->stats.nr_buckets = 1;
	if (z->stage < 2) {
		c->ops->allreduce_sum(c, m->grads_memory, m->nr_params);
		z->stats.exposed_ms = z->stats.inflight_ms = now_ms() - t0;
		scale_mean(c, m->grads_memory, m->nr_params);
		return;
	}
	/* backward never writes the padding, but a reduce-scatter may leave anything there */
	memset(m->grads_memory + z->nr_params, 0,
		(z->slice * (size_t)z->world_size - z->nr_params) * sizeof(float));
	c->ops->reduce_scatter_sum(c, m->grads_memory, z->slice);
	z->stats.exposed_ms = z->stats.inflight_ms = now_ms() - t0;
	/* the same multiplication as comm_allreduce_mean's, so 2 ranks give the same bits */
	scale_mean(c, m->grads_memory + z->lo, z->slice);
}

float zero_grad_norm(struct zero *z, const struct gpt2 *m, struct comm *c)
{
	/* stage 1 holds all the averaged gradients: stage 0's norm, bit for bit, no collective
	 * (under tensor parallelism one in the tensor group, gpt2_grad_norm) */
	if (z->stage < 2)
		return gpt2_grad_norm(m);
	if (m->tp.size > 1) {
		/* this rank's slice of its shards, the replicated tensors counted on tensor rank
		 * 0 alone: summed over the data group, then over the tensor group */
		float part = (float)gpt2_sum_squares_tp(m, m->grads_memory + z->lo, z->lo, z->hi);
		c->ops->allreduce_sum(c, &part, 1);
		m->tp.allreduce_sum(m->tp.arg, &part, 1);
		return sqrtf(part);
	}
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
