/* train/: pipeline parallelism (pp.h): a stage's model of its layers (its tensor
 * rank's shards of them), the 1F1B schedule of a step's micro-batches with the residual stream
 * sent forward and its gradient back, the tied wte's gradient summed between the first and last
 * stage, the global gradient norm, AdamW on the stage's part (its ZeRO slice of it), and the
 * gather and scatter that keep checkpoints one whole llm.c model file. The schedule runs the
 * stage ops of the CPU (model.h, host buffers) or of the GPU (gpt_cuda.h, device buffers). */
#include "config.h"

#include "train/pp.h"

#include "train/ckpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void pp_split(int nr_layers, int nr_stages, int stage, int *l0, int *l1)
{
	int base = nr_layers / nr_stages, extra = nr_layers % nr_stages;
	*l0 = stage * base + (stage < extra ? stage : extra);
	*l1 = *l0 + base + (stage < extra ? 1 : 0);
}

int pp_check_layout(int nr_stages, int overlap, int sample, char *err, size_t errlen)
{
	int P = nr_stages;
	if (P == 1)
		return 0;
	if (overlap) {
		snprintf(err, errlen,
			"--pipeline-parallel %d with --overlap on: a stage reduces its gradients over "
			"the data group after the schedule, not in buckets",
			P);
		return -EINVAL;
	}
	if (sample) {
		snprintf(err, errlen,
			"--pipeline-parallel %d with --sample: sampling from a pipelined model is "
			"not built yet",
			P);
		return -EINVAL;
	}
	return 0;
}

static const struct pp_stage_ops cpu_stage_ops;

int pp_init(struct pp *pp, const struct grid *g, const struct gpt2_tp *tp,
	const struct gpt2_config *full, int B, int T, bool gpu_model, char *err, size_t errlen)
{
	struct comm *pipe = g->pipeline;
	memset(pp, 0, sizeof(*pp));
	if (!pipe->ops->sendrecv) {
		snprintf(err, errlen,
			"--pipeline-parallel: the %s collective has no point-to-point sends",
			pipe->ops->name);
		return -EINVAL;
	}
	pp->grid = g;
	pp->pipe = pipe;
	pp->stage = pipe->rank;
	pp->nr_stages = pipe->world_size;
	pp->full_layers = full->nr_layers;
	pp->B = B;
	pp->T = T;
	pp_split(full->nr_layers, pp->nr_stages, pp->stage, &pp->l0, &pp->l1);
	struct gpt2_config c = *full;
	c.nr_layers = pp->l1 - pp->l0;
	pp->ops = &cpu_stage_ops;
	/* a GPU stage's activations live on the device: the host model of weights and moments
	 * (and a (1, 1) activation set, as the GPU trainer's host model) */
	pp->m = gpt2_new_tp(&c, gpu_model ? 1 : B, gpu_model ? 1 : T, tp);
	if (!pp->m)
		goto oom;
	pp->norm_parts = calloc((size_t)pp->nr_stages, sizeof(double));
	if (!pp->norm_parts)
		goto oom;
	if (gpu_model)
		return 0;
	/* the head's activations (lnf to scratch, the last 7: logits and probs are B*T*Vp each)
	 * only where the head runs: the other stages' extra sets end before them */
	bool last = pp->stage == pp->nr_stages - 1;
	for (int i = 0; i < (last ? GPT2_NR_ACT_TENSORS : GPT2_NR_ACT_TENSORS - 7); i++)
		pp->nr_act_floats += pp->m->act_sizes[i];
	pp->nr_slots = pp->nr_stages - pp->stage;
	pp->slots = calloc((size_t)pp->nr_slots, sizeof(*pp->slots));
	if (!pp->slots)
		goto oom;
	pp->slots[0] = pp->m->acts_memory;
	for (int k = 1; k < pp->nr_slots; k++) {
		pp->slots[k] = calloc(pp->nr_act_floats, sizeof(float));
		if (!pp->slots[k])
			goto oom;
	}
	pp->stream_bytes = (size_t)B * T * c.channels * sizeof(float);
	pp->recv_fwd = calloc(1, pp->stream_bytes);
	pp->recv_bwd = calloc(1, pp->stream_bytes);
	if (!pp->recv_fwd || !pp->recv_bwd)
		goto oom;
	if (pp->nr_stages > 1 && (pp->stage == 0 || last)) {
		pp->wte_other = malloc(pp->m->param_sizes[0] * sizeof(float));
		if (!pp->wte_other)
			goto oom;
	}
	return 0;
oom:
	snprintf(err, errlen,
		"--pipeline-parallel: out of memory for stage %d (layers %d-%d, %d activation "
		"set(s) of B %d T %d)",
		pp->stage, pp->l0, pp->l1 - 1, pp->nr_stages - pp->stage, B, T);
	pp_done(pp);
	return -ENOMEM;
}

void pp_done(struct pp *pp)
{
	gpt2_cuda_free(pp->gpu); /* its recv buffers with it */
	if (pp->gpu)
		pp->recv_fwd = pp->recv_bwd = NULL;
	if (pp->m && pp->slots)
		gpt2_point_acts(pp->m, NULL);
	for (int k = 1; pp->slots && k < pp->nr_slots; k++)
		free(pp->slots[k]);
	free(pp->slots);
	free(pp->inputs);
	free(pp->targets);
	free(pp->recv_fwd);
	free(pp->recv_bwd);
	free(pp->wte_other);
	free(pp->norm_parts);
	gpt2_free(pp->m);
	memset(pp, 0, sizeof(*pp));
}

/* ---- a stage's part of the whole model ---- */

/* Which of the non-layer tensors a stage keeps: wte on the first and the last (tied), wpe on
 * the first, lnfw and lnfb on the last. */
static bool stage_owns(int tensor, int stage, int nr_stages)
{
	bool first = stage == 0, last = stage == nr_stages - 1;
	switch (tensor) {
	case 0:
		return first || last;
	case 1:
		return first;
	case 14:
	case 15:
		return last;
	default:
		return true; /* a per-layer tensor: the stage's layers of it */
	}
}

static bool is_layer_tensor(int tensor)
{
	return tensor >= 2 && tensor <= 13;
}

/* Copies a flat block of a stage of nr_layers layers from l0 (sizes ssizes) to or from a whole
 * model's flat block (sizes fsizes of L layers): the per-layer tensors' rows of those layers,
 * and the other tensors where owned says (all: every one). */
static void copy_part(float *stage_flat, const size_t *ssizes, int l0, int nr_layers,
	float *full_flat, const size_t *fsizes, int L, int stage, int nr_stages, bool all,
	bool to_full)
{
	size_t so = 0, fo = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		float *s = stage_flat + so, *f = full_flat + fo;
		size_t n = ssizes[k];
		if (is_layer_tensor(k)) {
			size_t per = fsizes[k] / (size_t)L;
			f += (size_t)l0 * per;
			n = (size_t)nr_layers * per;
		} else if (!all && !stage_owns(k, stage, nr_stages)) {
			n = 0;
		}
		if (n)
			memcpy(to_full ? f : s, to_full ? s : f, n * sizeof(float));
		so += ssizes[k];
		fo += fsizes[k];
	}
}

/* The stage's whole tensors (its layers, unsharded: the layout pp_gather moves between stages
 * and ckpt_tp_gather and _scatter convert to the tensor rank's shards): their sizes, and the
 * sum returned. At T == 1 the stage model's own. */
static size_t stage_whole_sizes(const struct pp *pp, size_t sizes[GPT2_NR_PARAM_TENSORS])
{
	size_t n = 0;
	gpt2_param_sizes(&pp->m->config, sizes);
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++)
		n += sizes[k];
	return n;
}

/* malloc or the job ends with one line (a rank alone cannot leave the others waiting) */
static float *alloc_or_abort(const struct pp *pp, size_t n, const char *what)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	if (!p) {
		fprintf(stderr, "ferry train: out of memory %s (stage %d)\n", what, pp->stage);
		pp->pipe->ops->abort_all(pp->pipe, 1);
	}
	return p;
}

void pp_scatter(struct pp *pp, const struct gpt2 *full)
{
	struct gpt2 *m = pp->m;
	int L = full->config.nr_layers, nl = pp->l1 - pp->l0;
	size_t sizes[GPT2_NR_PARAM_TENSORS], n = stage_whole_sizes(pp, sizes);
	float *src[3] = { full->params_memory, full->m_memory, full->v_memory };
	float *dst[3] = { m->params_memory, m->m_memory, m->v_memory };
	/* tensor ranks: the stage's whole tensors first, then the rank's shards of them */
	float *whole = m->tp.size > 1 ? alloc_or_abort(pp, n, "scattering the model") : NULL;
	for (int i = 0; i < 3; i++) {
		if (!src[i]) /* a new run's moments: the stage's own zeros */
			continue;
		copy_part(whole ? whole : dst[i], sizes, pp->l0, nl, src[i], full->param_sizes, L,
			pp->stage, pp->nr_stages, true, false);
		if (whole)
			ckpt_tp_scatter(m, whole, dst[i]);
	}
	free(whole);
}

void pp_trim_whole(const struct pp *pp, struct gpt2 *full)
{
	(void)pp;
	free(full->params_memory);
	free(full->m_memory);
	free(full->v_memory);
	full->params_memory = full->m_memory = full->v_memory = NULL;
	memset(&full->params, 0, sizeof(full->params));
}

/* The whole model's flat sizes (of L layers, of which this stage holds [l0, l1)) */
static void full_sizes(const struct pp *pp, size_t sizes[GPT2_NR_PARAM_TENSORS])
{
	struct gpt2_config fc = pp->m->config;
	fc.nr_layers = pp->full_layers;
	gpt2_param_sizes(&fc, sizes);
}

/* The stages' whole tensors of one array (mine: this stage's, n floats of stage_whole_sizes)
 * into full on stage 0, over the pipeline group. */
static void gather_stages(struct pp *pp, const float *mine, size_t n, float *full)
{
	struct comm *c = pp->pipe;
	int L = pp->full_layers, P = pp->nr_stages;
	size_t own_sizes[GPT2_NR_PARAM_TENSORS], fsizes[GPT2_NR_PARAM_TENSORS];
	if (pp->stage != 0) {
		c->ops->sendrecv(c, mine, n * sizeof(float), 0, NULL, 0, -1);
		return;
	}
	stage_whole_sizes(pp, own_sizes);
	full_sizes(pp, fsizes);
	copy_part((float *)mine, own_sizes, pp->l0, pp->l1 - pp->l0, full, fsizes, L, 0, P, false,
		true);
	for (int s = 1; s < P; s++) {
		int l0, l1;
		pp_split(L, P, s, &l0, &l1);
		struct gpt2_config sc = pp->m->config;
		sc.nr_layers = l1 - l0;
		size_t sizes[GPT2_NR_PARAM_TENSORS], ns = 0;
		gpt2_param_sizes(&sc, sizes);
		for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++)
			ns += sizes[k];
		float *buf = alloc_or_abort(pp, ns, "gathering a checkpoint's stages");
		c->ops->sendrecv(c, NULL, 0, -1, buf, ns * sizeof(float), s);
		copy_part(buf, sizes, l0, l1 - l0, full, fsizes, L, s, P, false, true);
		free(buf);
	}
}

void pp_gather_array(struct pp *pp, const struct zero *z, int what, float *full)
{
	struct gpt2 *m = pp->m;
	const struct grid *g = pp->grid;
	const float *mine = what == CKPT_PARAMS          ? m->params_memory
			    : what == CKPT_FIRST_MOMENTS ? m->m_memory
							 : m->v_memory;
	float *slices = NULL, *whole = NULL;
	char err[256];
	/* ZeRO: the stage's moments from its data group's slices, onto data rank 0 */
	if (what != CKPT_PARAMS && z->stage > 0) {
		if (g->d == 0)
			slices = alloc_or_abort(pp, z->slice * (size_t)z->world_size,
				"gathering the optimizer state");
		if (zero_gather_slices(z, g->data, what == CKPT_FIRST_MOMENTS ? z->m : z->v,
			    slices) < 0) {
			fprintf(stderr,
				"ferry train: out of memory gathering the optimizer state\n");
			pp->pipe->ops->abort_all(pp->pipe, 1);
		}
		mine = slices;
	}
	if (g->d != 0)
		goto out; /* data rank 0's pipelines carry the checkpoint */
	/* the tensor group's shards into the stage's whole tensors, on tensor rank 0 (the one
	 * that sends them on) */
	size_t sizes[GPT2_NR_PARAM_TENSORS], n = stage_whole_sizes(pp, sizes);
	if (m->tp.size > 1) {
		if (g->t == 0)
			whole = alloc_or_abort(pp, n, "gathering tensor shards");
		if (ckpt_tp_gather(g->tensor, m, mine, whole, err, sizeof(err)) < 0) {
			fprintf(stderr, "ferry train: checkpoint: %s\n", err);
			pp->pipe->ops->abort_all(pp->pipe, 1);
		}
		mine = whole;
		if (g->t != 0)
			goto out;
	}
	gather_stages(pp, mine, n, full);
out:
	free(whole);
	free(slices);
}

int pp_fetch_array(void *arg, int what, float *full, char *err, size_t errlen)
{
	struct pp_fetch *f = arg;
	(void)err;
	(void)errlen;
	pp_gather_array(f->pp, f->z, what, full);
	return 0;
}

/* ---- the CPU stage (pp_stage_ops on model.h, host buffers) ---- */

/* The step's tokens for M micro-batches: the first stage's backward needs the inputs again,
 * the last stage's the targets. */
static void reserve_micro(struct pp *pp, int M)
{
	size_t BT = (size_t)pp->B * pp->T;
	if (M <= pp->cap_micro)
		return;
	free(pp->inputs);
	free(pp->targets);
	pp->inputs = malloc((size_t)M * BT * sizeof(int32_t));
	pp->targets = malloc((size_t)M * BT * sizeof(int32_t));
	if (!pp->inputs || !pp->targets) {
		fprintf(stderr, "ferry train: out of memory for %d micro-batches\n", M);
		pp->pipe->ops->abort_all(pp->pipe, 1);
	}
	pp->cap_micro = M;
}

/* Micro-batch i's activations: its slot (see struct pp). */
static void use_slot(struct pp *pp, int i)
{
	gpt2_point_acts(pp->m, pp->slots[i % pp->nr_slots]);
}

static void cpu_zero_grad(struct pp *pp)
{
	gpt2_zero_grad(pp->m);
	pp->loss_sum = 0.0;
}

/* The loss on the last stage is the forward's (model.c computes it with the head), added to
 * the step's. */
static void cpu_forward(struct pp *pp, int i, const struct loader_batch *b)
{
	struct gpt2 *m = pp->m;
	size_t BT = (size_t)pp->B * pp->T;
	int32_t *in = pp->inputs + i * BT, *tg = pp->targets + i * BT;
	memcpy(in, b->inputs, BT * sizeof(int32_t));
	memcpy(tg, b->targets, BT * sizeof(int32_t));
	use_slot(pp, i);
	if (pp->stage == 0)
		gpt2_forward_embed(m, in);
	else
		memcpy(gpt2_residual(m, 0, false), pp->recv_fwd, pp->stream_bytes);
	for (int l = 0; l < m->config.nr_layers; l++)
		gpt2_forward_block(m, l);
	if (pp->stage == pp->nr_stages - 1) {
		gpt2_forward_head(m, tg);
		pp->loss_sum += m->mean_loss;
	}
}

/* Leaves the gradient of the stream entering the stage in gpt2_residual(m, 0, true). */
static void cpu_backward(struct pp *pp, int i, float loss_scale)
{
	struct gpt2 *m = pp->m;
	size_t BT = (size_t)pp->B * pp->T;
	int nl = m->config.nr_layers;
	use_slot(pp, i);
	gpt2_backward_begin(m);
	if (pp->stage == pp->nr_stages - 1)
		gpt2_backward_head(m, pp->targets + i * BT, loss_scale);
	else
		memcpy(gpt2_residual(m, nl, true), pp->recv_bwd, pp->stream_bytes);
	for (int l = nl - 1; l >= 0; l--)
		gpt2_backward_block(m, l);
	if (pp->stage == 0)
		gpt2_backward_embed(m, pp->inputs + i * BT);
}

static const void *cpu_stream_out(struct pp *pp)
{
	return gpt2_residual(pp->m, pp->m->config.nr_layers, false);
}

static const void *cpu_grad_out(struct pp *pp)
{
	return gpt2_residual(pp->m, 0, true);
}

static float cpu_mean_loss(struct pp *pp, int nr_micro)
{
	return (float)(pp->loss_sum / nr_micro);
}

static float cpu_eval_loss(struct pp *pp)
{
	return pp->m->mean_loss;
}

/* The first and the last stage both hold wte (tied: the embedding's and the output
 * projection's gradients): each adds the other's, a + b == b + a, so both update it to the
 * same bits. Megatron's embedding group does the same all-reduce. */
static void cpu_exchange_wte(struct pp *pp, int peer)
{
	struct gpt2 *m = pp->m;
	size_t n = m->param_sizes[0];
	float *other = pp->wte_other;
	pp->pipe->ops->sendrecv(pp->pipe, m->grads.wte, n * sizeof(float), peer, other,
		n * sizeof(float), peer);
	for (size_t i = 0; i < n; i++)
		m->grads.wte[i] += other[i];
}

static void cpu_reduce_grads(struct pp *pp, struct zero *z)
{
	zero_reduce_grads(z, pp->m, pp->grid->data);
}

/* From the gradients zero_reduce_grads left (z: all of them, or at stage 2 the rank's
 * slice): the sum of squares of what the stage counts (the slices' summed over the data group
 * at stage 2, the shards' over the tensor group, gpt2_tp_sum). */
static double cpu_sum_squares(struct pp *pp, const struct zero *z)
{
	struct gpt2 *m = pp->m;
	size_t wte = m->param_sizes[0];
	size_t lo = z->stage == 2 ? z->lo : 0, hi = z->stage == 2 ? z->hi : m->nr_params;
	/* wte's gradient (the same on the first and last stage) counts once, the first's;
	 * what a stage does not use has a zero gradient and adds nothing */
	double ss = gpt2_grad_sum_squares(m, lo > wte ? lo : wte, hi);
	if (pp->stage == 0)
		ss += gpt2_grad_sum_squares(m, lo, hi < wte ? hi : wte);
	if (z->stage == 2) { /* the slices' sums, as zero_grad_norm adds them */
		float part = (float)ss;
		pp->grid->data->ops->allreduce_sum(pp->grid->data, &part, 1);
		ss = part;
	}
	return gpt2_tp_sum(m, ss);
}

static void cpu_update(struct pp *pp, const struct zero *z, const struct adamw_config *opt,
	float lr, float grad_scale, float norm, int t)
{
	struct gpt2 *m = pp->m;
	size_t wte = m->param_sizes[0], wpe = m->param_sizes[1];
	size_t lnf = m->param_sizes[14] + m->param_sizes[15], n = m->nr_params;
	bool first = pp->stage == 0, last = pp->stage == pp->nr_stages - 1;
	(void)norm;
	/* [lo, hi) ranges of the flat block this stage updates: what it does not use stays (a
	 * zero gradient would still decay it) */
	size_t ranges[2][2];
	int nr = 0;
	if (first) {
		ranges[nr][0] = 0;
		ranges[nr++][1] = last ? n : n - lnf;
	} else {
		if (last) {
			ranges[nr][0] = 0;
			ranges[nr++][1] = wte;
		}
		ranges[nr][0] = wte + wpe;
		ranges[nr++][1] = last ? n : n - lnf;
	}
	for (int i = 0; i < nr; i++) {
		size_t lo = ranges[i][0], hi = ranges[i][1];
		if (z->stage == 0) {
			gpt2_update_slice(m, opt, lr, grad_scale, t, lo, hi, m->grads_memory + lo,
				m->m_memory + lo, m->v_memory + lo);
			continue;
		}
		/* ZeRO: the part of the range in the rank's slice, with the slice's moments */
		lo = lo > z->lo ? lo : z->lo;
		hi = hi < z->hi ? hi : z->hi;
		if (lo < hi)
			gpt2_update_slice(m, opt, lr, grad_scale, t, lo, hi, m->grads_memory + lo,
				z->m + (lo - z->lo), z->v + (lo - z->lo));
	}
	if (z->stage > 0)
		pp->grid->data->ops->allgather(pp->grid->data, m->params_memory, z->slice);
}

static const struct pp_stage_ops cpu_stage_ops = {
	.name = "cpu",
	.zero_grad = cpu_zero_grad,
	.forward = cpu_forward,
	.backward = cpu_backward,
	.stream_out = cpu_stream_out,
	.grad_out = cpu_grad_out,
	.mean_loss = cpu_mean_loss,
	.eval_loss = cpu_eval_loss,
	.exchange_wte = cpu_exchange_wte,
	.reduce_grads = cpu_reduce_grads,
	.sum_squares = cpu_sum_squares,
	.update = cpu_update,
};

/* ---- the GPU stage (pp_stage_ops on gpt_cuda.h, device buffers) ---- */

/* The slots, the tokens of each micro-batch in flight and the loss live on the device
 * (gpt2_cuda_pp_stage): the ops hand the schedule's calls on. */
static void gpu_zero_grad(struct pp *pp)
{
	gpt2_cuda_zero_grad(pp->gpu);
}

static void gpu_forward(struct pp *pp, int i, const struct loader_batch *b)
{
	gpt2_cuda_pp_forward(pp->gpu, i, b, pp->recv_fwd);
}

static void gpu_backward(struct pp *pp, int i, float loss_scale)
{
	gpt2_cuda_pp_backward(pp->gpu, i, pp->recv_bwd, loss_scale);
}

static const void *gpu_stream_out(struct pp *pp)
{
	return gpt2_cuda_pp_stream_out(pp->gpu);
}

static const void *gpu_grad_out(struct pp *pp)
{
	return gpt2_cuda_pp_grad_out(pp->gpu);
}

/* NCCL enqueues a device sendrecv on the pipeline comm's stream, the stage's: the host waits
 * for that stream (through the comm's deadline) around each transfer, so that the schedule's
 * timing is the wait and the buffers are free when it returns. The price: the launch queue
 * drains once per transfer, which the CPU's blocking sends pay too. */
static void gpu_drain(struct pp *pp)
{
	gpt2_cuda_pp_sync(pp->gpu, pp->pipe);
}

static float gpu_mean_loss(struct pp *pp, int nr_micro)
{
	return gpt2_cuda_step_result(pp->gpu, nr_micro, NULL);
}

static float gpu_eval_loss(struct pp *pp)
{
	return gpt2_cuda_pp_eval_loss(pp->gpu);
}

static void gpu_exchange_wte(struct pp *pp, int peer)
{
	gpt2_cuda_pp_exchange_wte(pp->gpu, pp->pipe, peer);
}

static void gpu_reduce_grads(struct pp *pp, struct zero *z)
{
	(void)z; /* stage 0: pp_use_gpu refuses the others */
	gpt2_cuda_pp_reduce(pp->gpu);
}

static double gpu_sum_squares(struct pp *pp, const struct zero *z)
{
	(void)z;
	return gpt2_cuda_pp_sum_squares(pp->gpu, pp->stage == 0);
}

static void gpu_update(struct pp *pp, const struct zero *z, const struct adamw_config *opt,
	float lr, float grad_scale, float norm, int t)
{
	(void)z;
	gpt2_cuda_pp_update(pp->gpu, opt, lr, grad_scale, norm, t);
}

static const struct pp_stage_ops gpu_stage_ops = {
	.name = "cuda",
	.zero_grad = gpu_zero_grad,
	.forward = gpu_forward,
	.backward = gpu_backward,
	.stream_out = gpu_stream_out,
	.grad_out = gpu_grad_out,
	.drain = gpu_drain,
	.mean_loss = gpu_mean_loss,
	.eval_loss = gpu_eval_loss,
	.exchange_wte = gpu_exchange_wte,
	.reduce_grads = gpu_reduce_grads,
	.sum_squares = gpu_sum_squares,
	.update = gpu_update,
};

int pp_use_gpu(struct pp *pp, const struct gpt2_cuda_opts *o, char *err, size_t errlen)
{
	int P = pp->nr_stages, s = pp->stage;
	if (pp->m->tp.size > 1 || (o->zero && o->zero->stage > 0) || o->cuda_graph) {
		snprintf(err, errlen,
			"--device cuda --pipeline-parallel %d: not with --tensor-parallel, "
			"--zero-stage 1/2 or --cuda-graph (not built)",
			P);
		return -EINVAL;
	}
	pp->gpu = gpt2_cuda_new(pp->m, pp->B, pp->T, o, err, errlen);
	if (!pp->gpu)
		return -EINVAL;
	if (gpt2_cuda_pp_stage(pp->gpu, s == 0, s == P - 1, P - s, err, errlen) < 0)
		return -EINVAL;
	pp->recv_fwd = gpt2_cuda_pp_recv(pp->gpu, false);
	pp->recv_bwd = gpt2_cuda_pp_recv(pp->gpu, true);
	pp->stream_bytes = gpt2_cuda_pp_stream_bytes(pp->gpu);
	pp->ops = &gpu_stage_ops;
	return 0;
}

void pp_store(struct pp *pp)
{
	if (pp->gpu)
		gpt2_cuda_store(pp->gpu, pp->m);
}

/* ---- the 1F1B schedule, the same for every stage backend ---- */

/* A send to dest and a receive from src at once (either < 0: none); the time it takes is the
 * stage's idle time, the bubble. */
static void xfer(struct pp *pp, const void *sbuf, int dest, void *rbuf, int src)
{
	if (dest < 0 && src < 0)
		return;
	size_t n = pp->stream_bytes;
	if (pp->ops->drain)
		pp->ops->drain(pp);
	double t = now_ms();
	pp->pipe->ops->sendrecv(pp->pipe, sbuf, n, dest, rbuf, n, src);
	if (pp->ops->drain)
		pp->ops->drain(pp);
	pp->idle_ms += now_ms() - t;
}

static int prev_stage(const struct pp *pp)
{
	return pp->stage == 0 ? -1 : pp->stage - 1;
}

static int next_stage(const struct pp *pp)
{
	return pp->stage == pp->nr_stages - 1 ? -1 : pp->stage + 1;
}

/* Forward of micro-batch i, its batch read now (every stage reads the same samples in the
 * same order). */
static void forward_micro(struct pp *pp, int i, pp_next_batch_fn next, void *arg)
{
	struct loader_batch b;
	next(arg, &b);
	pp->ops->forward(pp, i, &b);
}

/* The first and the last stage sum wte's gradient (the stage ops' exchange). */
static void exchange_wte_grads(struct pp *pp)
{
	int P = pp->nr_stages;
	if (P == 1 || (pp->stage != 0 && pp->stage != P - 1))
		return;
	if (pp->ops->drain)
		pp->ops->drain(pp);
	pp->ops->exchange_wte(pp, pp->stage == 0 ? P - 1 : 0);
}

float pp_forward_backward(struct pp *pp, int nr_micro, pp_next_batch_fn next, void *arg,
	float loss_scale)
{
	const struct pp_stage_ops *ops = pp->ops;
	int M = nr_micro, s = pp->stage, P = pp->nr_stages;
	int prev = prev_stage(pp), nxt = next_stage(pp);
	double t0 = now_ms();

	reserve_micro(pp, M);
	pp->idle_ms = 0.0;
	ops->zero_grad(pp);
	/* 1F1B (PipeDream-Flush, as Megatron's non-interleaved schedule): P - s - 1 forwards
	 * to fill the pipe, then each forward followed by the backward of the oldest
	 * micro-batch in flight, then the backwards left. A send and the receive that follows
	 * it go in one sendrecv, so neighbours that send to each other never deadlock. */
	int warm = P - s - 1 < M ? P - s - 1 : M, steady = M - warm, fwd = 0, bwd = 0;
	for (int i = 0; i < warm; i++, fwd++) {
		xfer(pp, NULL, -1, pp->recv_fwd, prev);
		forward_micro(pp, fwd, next, arg);
		xfer(pp, ops->stream_out(pp), nxt, NULL, -1);
	}
	if (steady > 0)
		xfer(pp, NULL, -1, pp->recv_fwd, prev);
	for (int i = 0; i < steady; i++, fwd++, bwd++) {
		forward_micro(pp, fwd, next, arg);
		xfer(pp, ops->stream_out(pp), nxt, pp->recv_bwd, nxt);
		ops->backward(pp, bwd, loss_scale);
		xfer(pp, ops->grad_out(pp), prev, pp->recv_fwd, i == steady - 1 ? -1 : prev);
	}
	for (int i = 0; i < warm; i++, bwd++) {
		xfer(pp, NULL, -1, pp->recv_bwd, nxt);
		ops->backward(pp, bwd, loss_scale);
		xfer(pp, ops->grad_out(pp), prev, NULL, -1);
	}
	if (ops->drain) /* the last backward's work is the schedule's */
		ops->drain(pp);
	double total_ms = now_ms() - t0;
	exchange_wte_grads(pp);

	/* the bubble: this stage's idle share, averaged over the stages */
	float frac = total_ms > 0.0 ? (float)(pp->idle_ms / total_ms) : 0.0f;
	pp->pipe->ops->allreduce_sum(pp->pipe, &frac, 1);
	pp->bubble.idle_ms += pp->idle_ms;
	pp->bubble.total_ms += total_ms;
	pp->bubble.mean_frac_sum += frac / P;
	pp->bubble.nr_steps++;

	/* the last stage's mean; the others add zeros, so every stage has its exact bits */
	float loss = s == P - 1 ? ops->mean_loss(pp, M) : 0.0f;
	pp->pipe->ops->allreduce_sum(pp->pipe, &loss, 1);
	return loss;
}

void pp_reduce_grads(struct pp *pp, struct zero *z)
{
	pp->ops->reduce_grads(pp, z);
}

float pp_grad_norm(struct pp *pp, const struct zero *z)
{
	struct comm *c = pp->pipe;
	int P = pp->nr_stages;
	double ss = pp->ops->sum_squares(pp, z);
	/* the stages' sums as doubles (each two floats' bytes), added in stage order */
	double *all = pp->norm_parts;
	memset(all, 0, (size_t)P * sizeof(double));
	all[pp->stage] = ss;
	c->ops->allgather(c, (float *)all, sizeof(double) / sizeof(float));
	double sum = 0.0;
	for (int s = 0; s < P; s++)
		sum += all[s];
	return (float)sqrt(sum);
}

void pp_update(struct pp *pp, const struct zero *z, const struct adamw_config *opt, float lr,
	float grad_scale, float norm, int t)
{
	pp->ops->update(pp, z, opt, lr, grad_scale, norm, t);
}

float pp_eval_loss(struct pp *pp, const struct loader_batch *b)
{
	struct comm *c = pp->pipe;
	int P = pp->nr_stages;
	/* micro-batch 0's slot; the tokens kept as a step keeps them */
	reserve_micro(pp, 1);
	xfer(pp, NULL, -1, pp->recv_fwd, pp->stage == 0 ? -1 : pp->stage - 1);
	pp->ops->forward(pp, 0, b);
	float loss = 0.0f;
	if (pp->stage == P - 1)
		loss = pp->ops->eval_loss(pp);
	else
		xfer(pp, pp->ops->stream_out(pp), pp->stage + 1, NULL, -1);
	c->ops->allreduce_sum(c, &loss, 1);
	return loss;
}

void pp_report(const struct pp *pp, int nr_micro, FILE *f)
{
	const struct pp_bubble *b = &pp->bubble;
	int P = pp->nr_stages, M = nr_micro;
	if (pp->stage != 0 || b->nr_steps == 0)
		return;
	fprintf(f,
		"ferry train: pipeline of %d stages, %d micro-batches a step: bubble %.3f measured "
		"(idle/total, mean over stages and %d steps), %.3f theoretical (P-1)/(M+P-1)\n",
		P, M, b->mean_frac_sum / b->nr_steps, b->nr_steps,
		(double)(P - 1) / (double)(M + P - 1));
}
