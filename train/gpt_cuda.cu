/* train/: the GPU trainer (see gpt_cuda.h): model.c's forward and backward on one GPU, built
 * from kernels/, with the residual adds fused into the layernorms, the GELU into the fc matmul
 * and the softmax's gradient into the logits buffer. Tokens enter through two fixed device
 * buffers so each micro-step (and the update) can be captured once in a CUDA graph and
 * replayed; the host waits for the GPU only in step_result (the loss) and eval. Under tensor
 * parallelism each GPU holds its shards in model.c's layout (gpt2_tp): qkv and fc
 * column-parallel on its heads and 4C/T rows, attproj and fcproj row-parallel, their outputs
 * all-reduced over the tensor group on the stream (in the activation precision) before their
 * bias is added, and the input gradients of qkv and fc all-reduced in backward. A pipeline
 * stage (pp.h) is a model of its layers that starts from the stream received or ends before the
 * head, with an activation set per micro-batch in flight (gpt2_cuda_pp_*). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include <cuda_runtime.h>

extern "C" {
#include "config.h"
#include "train/gpt_cuda.h"
}
#include "kernels/kernels.h"

/* The trainer's answer to a failed CUDA call, and to an error the kernels kept (k_error): one
 * line on stderr, exit 1. Nothing can be saved: the context is likely unusable. */
static void cuda_fail(const char *what, const char *file, int line, const char *msg)
{
	fprintf(stderr, "ferry train: CUDA error at %s:%d: %s: %s\n", file, line, what, msg);
	exit(1);
}
#define CUDA_CHECK(x)                                                                              \
	do {                                                                                       \
		cudaError_t e_ = (x);                                                              \
		if (e_ != cudaSuccess)                                                             \
			cuda_fail(#x, __FILE__, __LINE__, cudaGetErrorString(e_));                 \
	} while (0)

/* At each point the host waits for the GPU (and where it is built): the kernels' first error. */
static void check_kernels(void)
{
	char msg[512];
	if (k_error(msg, sizeof(msg))) {
		fprintf(stderr, "ferry train: CUDA error in %s\n", msg);
		exit(1);
	}
}

/* A micro-step or the update as a CUDA graph: run eagerly once (warm), captured the next time. */
struct graph {
	int warm;
	cudaGraphExec_t exec;
};

/* FERRY_TRAIN_PROFILE on the GPU: forward and backward record an event after each group of
 * kernels of one layer kind (enum gpt2_prof); at the host's sync points the time between
 * consecutive events is added to the kind of the group that ended it. A forward starts the chain
 * with an event of no kind, so the gaps between micro-steps (token copies) count for nothing. */
#define PROF_EVENTS 1024
#define PROF_NONE   (-1)
struct prof {
	double *secs; /* (GPT2_NR_PROF), the caller's; NULL: not profiling */
	int n;        /* events recorded since the last collection */
	cudaEvent_t ev[PROF_EVENTS];
	int kind[PROF_EVENTS]; /* of the interval that ends at ev[i] */
};

/* Device tensors of one model. Per-layer activations are (L, ...) blocks as in model.h; the
 * gradients of activations exist for one layer at a time (the backward walks down). */
struct gpt2_cuda {
	struct gpt2_config c;
	int B, T, N;
	enum kdtype dt;
	size_t esz; /* bytes of a dt element */
	size_t nr_params, sizes[GPT2_NR_PARAM_TENSORS], offs[GPT2_NR_PARAM_TENSORS];
	float *master, *grads; /* (flat) fp32 */
	float *m, *v;          /* (hi - lo) fp32: the rank's slice at ZeRO 1 and 2, else all */
	void *params;          /* (nr_params) dt; == master in fp32 */
	/* ZeRO (gpt2_cuda_opts.zero): stage, the rank's parameters [lo, hi) of slice per rank,
	 * flat = world * slice floats of master and grads (the padding stays 0); stage 0: the
	 * whole, flat = nr_params */
	struct zero *zero;
	int stage, rank, world;
	size_t lo, hi, slice, flat;
	struct comm *comm; /* gpt2_cuda_opts.comm */
	/* Tensor parallelism (gpt2_cuda_opts.tensor): tp ranks, this one tp_rank; Cl and NHl its
	 * channels of attention (C / tp; 4 * Cl of the MLP) and its heads, C and NH where tp is 1.
	 * data: the group the gradients and the buckets are reduced over (comm without groups).
	 * The norm sums the squares of the nr_norm ranges of grads (the shards, and on tensor
	 * rank 0 the replicated tensors; within [lo, hi) at ZeRO 2) into sumsq. */
	int tp, tp_rank, Cl, NHl;
	struct comm *tensor, *data;
	int nr_norm;
	size_t norm_offs[K_NORM_RANGES], norm_lens[K_NORM_RANGES];
	/* --overlap (zero.h's buckets, any stage the zero allows): shadow is a struct gpt2 with
	 * the model's shapes whose grads_memory is grads, on the device, so that zero.c's
	 * grads_ready hook, called by backward as on the CPU, starts the same buckets (it never
	 * reads the memory, it hands comm ranges of it). armed: this backward starts them. */
	struct zero *buckets;
	struct gpt2 shadow;
	int armed;
	/* the step's reduction timed on the stream: ev_first when the first bucket's gradients
	 * were final, ev_reduce before the wait for the buckets (or the single collective),
	 * ev_reduced after it; read by gpt2_cuda_reduce_stats once the step is waited for */
	cudaEvent_t ev_first, ev_reduce, ev_reduced;
	int timed, overlapped, nr_buckets;
	float *sumsq;  /* (1) stage 2: the slice's sum of squares, then every rank's */
	float *h_flat; /* stage >= 1 over a comm without device buffers: a host bounce, (flat) */
	/* activations (dt unless said) */
	void *encoded, *ln1, *qkv, *atty, *residual2, *ln2, *fch, *fch_gelu, *residual3, *lnf;
	void *logits, *proj;
	float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean, *lnf_rstd, *lse, *losses;
	/* activation gradients, one layer's worth */
	void *dresidual, *dln, *datty, *dfch, *dqkv;
	float *delta, *scratch;
	void *enc_scratch;
	size_t enc_scratch_bytes;
	double *norm_scratch, *loss_acc, *eval_acc;
	float *normscale;    /* (2): norm, AdamW's gradient factor */
	float *hp, *hp_host; /* (3) lr, 1-b1^t, 1-b2^t; host side pinned */
	int32_t *d_in, *d_tgt;
	cudaStream_t stream;
	struct kmatmul *mm;
	int use_graph;
	int attention_tc; /* attention on tensor cores */
	float graph_loss_scale;
	struct graph graph_step, graph_update;
	/* A pipeline stage (gpt2_cuda_pp_stage; a whole model is its own first and last stage):
	 * pp_first runs the embedding, else forward starts from pp_in (device, the stream
	 * received); pp_last the final layernorm, head and loss, else backward starts from
	 * pp_grad_in. The micro-batches in flight each have a slot of the activations a backward
	 * reads (slot_fields): slot_ptrs holds nr_slots sets of NR_SLOT_FIELDS pointers, the
	 * fields of this struct pointing at slot's. pp_norm: normscale comes from the stages'
	 * norm (gpt2_cuda_pp_update), not from k_global_norm; unused: the tensors AdamW leaves
	 * (a stage's wpe, wte or lnf it never runs). */
	int pp_first, pp_last, pp_norm, nr_slots, slot;
	const void *pp_in, *pp_grad_in;
	void **slot_ptrs;
	void *pp_recv[2]; /* (N, C) dt each: the stream and its gradient as received */
	float *wte_other; /* (Vp, C): the other end's wte gradient (first and last stage) */
	int unused[GPT2_NR_PARAM_TENSORS];
	struct prof prof;
	struct adamw_config graph_opt;
	float graph_clip;
	int graph_world;
};

extern "C" int gpt2_cuda_available(char *err, size_t errlen)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e == cudaSuccess && n == 0)
		e = cudaErrorNoDevice;
	if (e != cudaSuccess) {
		/* not always "no GPU": a driver older than the runtime needs is said as such */
		snprintf(err, errlen, "--device cuda: cannot use a GPU: %s (%s)",
			cudaGetErrorString(e), cudaGetErrorName(e));
		return -ENODEV;
	}
	return 0;
}

extern "C" int gpt2_cuda_local_device(void)
{
	struct launch l;
	char err[256];
	int n = 0;
	/* a launch that does not read has already ended the run in comm_init */
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0 ||
		launch_read(&l, err, sizeof(err)) < 0)
		return 0;
	return l.local_rank % n;
}

/* After a sync: the recorded intervals into prof.secs; the last event stays as the start of
 * the next interval. */
static void prof_collect(struct prof *p)
{
	for (int i = 1; i < p->n; i++) {
		float ms = 0.0f;
		if (p->kind[i] == PROF_NONE)
			continue;
		CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]));
		p->secs[p->kind[i]] += ms * 1e-3;
	}
	if (p->n > 1) {
		cudaEvent_t last = p->ev[p->n - 1];
		p->ev[p->n - 1] = p->ev[0];
		p->ev[0] = last;
		p->kind[0] = PROF_NONE;
		p->n = 1;
	}
}

/* Waits for the stream; any error there or kept by the kernels ends the run. Over NCCL the
 * comm's sync waits, with its deadline: the stream may hold collectives. */
static void sync_stream(struct gpt2_cuda *g)
{
	if (g->comm && g->comm->ops->sync) {
		g->comm->cuda_stream = g->stream;
		g->comm->ops->sync(g->comm);
	} else {
		CUDA_CHECK(cudaStreamSynchronize(g->stream));
	}
	check_kernels();
	if (g->prof.secs)
		prof_collect(&g->prof);
}

/* The work enqueued since the last mark was of layer kind (PROF_NONE: of none). A full pool
 * is collected at once, at the price of one sync inside the step. */
static void prof_mark(struct gpt2_cuda *g, int kind)
{
	struct prof *p = &g->prof;
	if (!p->secs)
		return;
	if (p->n == PROF_EVENTS)
		sync_stream(g);
	p->kind[p->n] = kind;
	CUDA_CHECK(cudaEventRecord(p->ev[p->n++], g->stream));
}

/* Zeroed device memory. The memset runs on the legacy default stream, which the trainer's
 * non-blocking stream does not wait for: gpt2_cuda_new synchronises the device before use. */
static void *dmalloc(size_t bytes)
{
	void *p = NULL;
	CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 16));
	CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 16));
	return p;
}

/* Element i of a dt tensor. */
static inline void *at(const struct gpt2_cuda *g, const void *base, size_t i)
{
	return (char *)base + i * g->esz;
}

static inline void *param(const struct gpt2_cuda *g, int k, size_t i)
{
	return at(g, g->params, g->offs[k] + i);
}

static inline float *grad(const struct gpt2_cuda *g, int k, size_t i)
{
	return g->grads + g->offs[k] + i;
}

enum {
	WTE,
	WPE,
	LN1W,
	LN1B,
	QKVW,
	QKVB,
	ATTPROJW,
	ATTPROJB,
	LN2W,
	LN2B,
	FCW,
	FCB,
	FCPROJW,
	FCPROJB,
	LNFW,
	LNFB
};

/* Tensor parallelism: the ranges of the flat gradients whose squares make this rank's part of
 * the whole model's norm (gpt2_sum_squares_tp's): every shard, the replicated tensors on
 * tensor rank 0 alone (the sum over the tensor group counts them once), cut to the slice
 * [lo, hi) the rank holds summed at ZeRO 2; adjacent ranges merged (tensor rank 0 has one). */
static void tp_norm_ranges(struct gpt2_cuda *g)
{
	int sliced = g->stage == 2 && g->world > 1;
	size_t lo = sliced ? g->lo : 0, hi = sliced ? g->hi : g->nr_params;
	g->nr_norm = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t a = g->offs[k] > lo ? g->offs[k] : lo;
		size_t b = g->offs[k] + g->sizes[k] < hi ? g->offs[k] + g->sizes[k] : hi;
		if (a >= b || (!gpt2_param_is_sharded(k) && g->tp_rank != 0))
			continue;
		int n = g->nr_norm;
		if (n > 0 && g->norm_offs[n - 1] + g->norm_lens[n - 1] == a) {
			g->norm_lens[n - 1] += b - a;
			continue;
		}
		/* at most 3 ranges: the shards are tensors 4-6 and 10-12 */
		g->norm_offs[n] = a;
		g->norm_lens[n] = b - a;
		g->nr_norm++;
	}
}

extern "C" struct gpt2_cuda *gpt2_cuda_new(const struct gpt2 *host, int B, int T,
	const struct gpt2_cuda_opts *o, char *err, size_t errlen)
{
	const struct gpt2_config *c = &host->config;
	int C = c->channels, L = c->nr_layers, NH = c->nr_heads, Vp = c->padded_vocab_size;
	int tp = host->tp.size > 1 ? host->tp.size : 1;
	if (gpt2_cuda_available(err, errlen) < 0)
		return NULL;
	/* the tensor group's all-reduces are on device buffers, inside forward and backward */
	if (tp > 1 && (!o->tensor || !o->tensor->ops->allreduce_sum_bf16 ||
			      o->tensor->world_size != tp)) {
		snprintf(err, errlen,
			"--device cuda --tensor-parallel %d: the tensor group needs GPU ranks over "
			"NCCL",
			tp);
		return NULL;
	}
	/* NCCL may deadlock two communicators whose kernels run at once: the data group's
	 * buckets on the side stream beside the tensor group's all-reduces in backward */
	if (tp > 1 && o->zero && o->zero->overlap) {
		snprintf(err, errlen,
			"--overlap on: not with --tensor-parallel on GPUs (the data group's buckets "
			"would run beside the tensor group's all-reduces); use --overlap off");
		return NULL;
	}
	if (tp > 1 && o->cuda_graph) {
		snprintf(err, errlen,
			"--cuda-graph: not with --tensor-parallel (the tensor group's all-reduces "
			"inside forward and backward are not captured)");
		return NULL;
	}
	if (C % 8 || Vp % 8) {
		snprintf(err, errlen,
			"--device cuda: channels %d and padded vocabulary %d must be "
			"multiples of 8",
			C, Vp);
		return NULL;
	}
	if (!k_attention_supported(C, NH)) {
		snprintf(err, errlen,
			"--device cuda: head size %d (dim/heads) must be 16, 32, 64 "
			"or 128",
			NH ? C / NH : 0);
		return NULL;
	}
	if (T > c->max_seq_len) {
		snprintf(err, errlen, "--device cuda: T %d exceeds max_seq_len %d", T,
			c->max_seq_len);
		return NULL;
	}
	struct gpt2_cuda *g = (struct gpt2_cuda *)calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	CUDA_CHECK(cudaSetDevice(o->device));
	g->c = *c;
	g->B = B;
	g->T = T;
	g->N = B * T;
	g->dt = o->bf16 ? KDT_BF16 : KDT_F32;
	g->esz = kdtype_bytes(g->dt);
	g->use_graph = o->cuda_graph;
	g->pp_first = g->pp_last = 1;
	/* FERRY_CUDA_ATTENTION=cores keeps the CUDA-core kernel, the reference, for comparison */
	const char *att = getenv("FERRY_CUDA_ATTENTION");
	g->tp = tp;
	g->tp_rank = tp > 1 ? host->tp.rank : 0;
	g->Cl = C / tp;
	g->NHl = NH / tp;
	g->tensor = o->tensor;
	g->data = o->data ? o->data : o->comm;
	int Cl = g->Cl, NHl = g->NHl;
	g->attention_tc =
		k_attention_tc_supported(Cl, NHl, g->dt) && !(att && !strcmp(att, "cores"));
	g->nr_params = host->nr_params;
	size_t off = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		g->sizes[k] = host->param_sizes[k];
		g->offs[k] = off;
		off += g->sizes[k];
	}
	size_t P = g->nr_params, N = g->N, esz = g->esz, NC = N * C;
	g->comm = o->comm;
	g->buckets = o->zero;
	g->shadow.config = *c;
	g->shadow.tp = host->tp;
	g->shadow.nr_params = host->nr_params;
	memcpy(g->shadow.param_sizes, host->param_sizes, sizeof(g->shadow.param_sizes));
	g->zero = o->zero && o->zero->stage > 0 ? o->zero : NULL;
	g->world = 1;
	g->lo = 0;
	g->hi = g->slice = g->flat = P;
	if (g->zero) {
		g->stage = g->zero->stage;
		g->rank = g->zero->rank;
		g->world = g->zero->world_size;
		g->lo = g->zero->lo;
		g->hi = g->zero->hi;
		g->slice = g->zero->slice;
		g->flat = g->slice * (size_t)g->world;
	}
	if (tp > 1)
		tp_norm_ranges(g);
	size_t MV = g->hi - g->lo;
	g->master = (float *)dmalloc(g->flat * 4);
	g->grads = (float *)dmalloc(g->flat * 4);
	g->m = (float *)dmalloc(MV * 4);
	g->v = (float *)dmalloc(MV * 4);
	g->sumsq = (float *)dmalloc(4);
	g->params = g->dt == KDT_F32 ? (void *)g->master : dmalloc(P * esz);
	g->encoded = dmalloc(NC * esz);
	g->ln1 = dmalloc(L * NC * esz);
	/* this rank's heads and MLP channels: NCl = NC / tp */
	size_t NCl = N * (size_t)Cl;
	g->qkv = dmalloc(3 * L * NCl * esz);
	g->atty = dmalloc(L * NCl * esz);
	g->residual2 = dmalloc(L * NC * esz);
	g->ln2 = dmalloc(L * NC * esz);
	g->fch = dmalloc(4 * L * NCl * esz);
	g->fch_gelu = dmalloc(4 * L * NCl * esz);
	g->residual3 = dmalloc(L * NC * esz);
	g->lnf = dmalloc(NC * esz);
	g->logits = dmalloc(N * Vp * esz);
	g->proj = dmalloc(NC * esz);
	g->ln1_mean = (float *)dmalloc(L * N * 4);
	g->ln1_rstd = (float *)dmalloc(L * N * 4);
	g->ln2_mean = (float *)dmalloc(L * N * 4);
	g->ln2_rstd = (float *)dmalloc(L * N * 4);
	g->lnf_mean = (float *)dmalloc(N * 4);
	g->lnf_rstd = (float *)dmalloc(N * 4);
	g->lse = (float *)dmalloc(L * NHl * N * 4);
	g->losses = (float *)dmalloc(N * 4);
	g->dresidual = dmalloc(NC * esz);
	g->dln = dmalloc(NC * esz);
	g->datty = dmalloc(NCl * esz);
	g->dfch = dmalloc(4 * NCl * esz);
	g->dqkv = dmalloc(3 * NCl * esz);
	g->delta = (float *)dmalloc(NHl * N * 4);
	size_t sf = k_layernorm_backward_scratch_floats((int)N, C);
	size_t sb = k_bias_backward_scratch_floats((int)N, 4 * C);
	if (k_bias_backward_scratch_floats((int)N, Vp) > sb)
		sb = k_bias_backward_scratch_floats((int)N, Vp);
	g->scratch = (float *)dmalloc((sf > sb ? sf : sb) * 4);
	g->enc_scratch_bytes = k_encoder_backward_scratch_bytes(B, T, c->vocab_size);
	g->enc_scratch = dmalloc(g->enc_scratch_bytes);
	g->norm_scratch =
		(double *)dmalloc((tp > 1 ? K_NORM_RANGES : 1) * K_NORM_BLOCKS * sizeof(double));
	g->loss_acc = (double *)dmalloc(sizeof(double));
	g->eval_acc = (double *)dmalloc(sizeof(double));
	g->normscale = (float *)dmalloc(2 * 4);
	g->hp = (float *)dmalloc(3 * 4);
	/* hp's 3, then a pipeline stage's normscale (gpt2_cuda_pp_update) */
	CUDA_CHECK(cudaHostAlloc((void **)&g->hp_host, 5 * 4, cudaHostAllocDefault));
	g->d_in = (int32_t *)dmalloc(N * 4);
	g->d_tgt = (int32_t *)dmalloc(N * 4);
	/* Non-blocking: nothing else (the loader's copies, a library's work on the legacy stream)
	 * serialises with it; what it must wait for is ordered by events or synchronisation. NCCL
	 * runs on it (comm->cuda_stream). */
	CUDA_CHECK(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
	g->shadow.grads_memory = g->grads;
	CUDA_CHECK(cudaEventCreate(&g->ev_first));
	CUDA_CHECK(cudaEventCreate(&g->ev_reduce));
	CUDA_CHECK(cudaEventCreate(&g->ev_reduced));
	g->mm = kmatmul_new();
	if (!g->mm) {
		char msg[512];
		snprintf(err, errlen, "--device cuda: cuBLASLt: %s",
			k_error(msg, sizeof(msg)) ? msg : "out of memory");
		gpt2_cuda_free(g); /* every buffer and the stream exist by now */
		return NULL;
	}
	CUDA_CHECK(cudaDeviceSynchronize()); /* dmalloc's memsets, on the legacy stream */
	CUDA_CHECK(cudaMemcpyAsync(g->master, host->params_memory, P * 4, cudaMemcpyHostToDevice,
		g->stream));
	/* zero_init took the moments of the slice out of the host model (m_memory is NULL) */
	const float *hm = g->zero ? g->zero->m : host->m_memory;
	const float *hv = g->zero ? g->zero->v : host->v_memory;
	CUDA_CHECK(cudaMemcpyAsync(g->m, hm, MV * 4, cudaMemcpyHostToDevice, g->stream));
	CUDA_CHECK(cudaMemcpyAsync(g->v, hv, MV * 4, cudaMemcpyHostToDevice, g->stream));
	if (g->dt != KDT_F32)
		k_cast(g->params, g->dt, g->master, KDT_F32, P, g->stream);
	sync_stream(g);
	return g;
}

static void pp_free_slots(struct gpt2_cuda *g);

extern "C" void gpt2_cuda_free(struct gpt2_cuda *g)
{
	if (!g)
		return;
	sync_stream(g);
	pp_free_slots(g);
	if (g->graph_step.exec)
		cudaGraphExecDestroy(g->graph_step.exec);
	if (g->graph_update.exec)
		cudaGraphExecDestroy(g->graph_update.exec);
	void *bufs[] = { g->grads, g->m, g->v, g->encoded, g->ln1, g->qkv, g->atty, g->residual2,
		g->ln2, g->fch, g->fch_gelu, g->residual3, g->lnf, g->logits, g->proj, g->ln1_mean,
		g->ln1_rstd, g->ln2_mean, g->ln2_rstd, g->lnf_mean, g->lnf_rstd, g->lse, g->losses,
		g->dresidual, g->dln, g->datty, g->dfch, g->dqkv, g->delta, g->scratch,
		g->enc_scratch, g->norm_scratch, g->loss_acc, g->eval_acc, g->normscale, g->hp,
		g->d_in, g->d_tgt, g->sumsq, g->pp_recv[0], g->pp_recv[1], g->wte_other };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		cudaFree(bufs[i]);
	if (g->params != g->master)
		cudaFree(g->params);
	cudaFree(g->master);
	cudaFreeHost(g->hp_host);
	free(g->h_flat);
	for (int i = 0; g->prof.secs && i < PROF_EVENTS; i++)
		cudaEventDestroy(g->prof.ev[i]);
	kmatmul_free(g->mm);
	cudaEventDestroy(g->ev_first);
	cudaEventDestroy(g->ev_reduce);
	cudaEventDestroy(g->ev_reduced);
	cudaStreamDestroy(g->stream);
	free(g);
}

extern "C" void gpt2_cuda_store(struct gpt2_cuda *g, struct gpt2 *host)
{
	size_t bytes = g->nr_params * 4, mv = (g->hi - g->lo) * 4;
	sync_stream(g);
	CUDA_CHECK(cudaMemcpy(host->params_memory, g->master, bytes, cudaMemcpyDeviceToHost));
	CUDA_CHECK(cudaMemcpy(g->zero ? g->zero->m : host->m_memory, g->m, mv,
		cudaMemcpyDeviceToHost));
	CUDA_CHECK(cudaMemcpy(g->zero ? g->zero->v : host->v_memory, g->v, mv,
		cudaMemcpyDeviceToHost));
}

extern "C" void gpt2_cuda_memory(const struct gpt2_cuda *g, struct zero_memory *mem)
{
	mem->params = g->flat * 4 + (g->dt == KDT_F32 ? 0 : g->nr_params * g->esz);
	mem->grads = g->flat * 4;
	mem->optimizer = 2 * (g->hi - g->lo) * 4;
}

/* Tensor parallelism: buf (n elements of the activation type, device) summed over the tensor
 * group on the stream. In the activation precision: the matmul has rounded the partial sums to
 * it already, and on 2 ranks their sum is rounded to bf16 once either way, so an fp32
 * all-reduce (a cast on either side) would cost two kernels and twice the bytes for nothing. */
static void tensor_allreduce(struct gpt2_cuda *g, void *buf, size_t n)
{
	struct comm *t = g->tensor;
	t->cuda_stream = g->stream;
	if (g->dt == KDT_F32)
		t->ops->allreduce_sum(t, (float *)buf, n);
	else
		t->ops->allreduce_sum_bf16(t, buf, n);
}

/* out (N, OC) = inp (N, K) @ w^T + bias. Row-parallel under tensor parallelism (attproj and
 * fcproj: K is this rank's share of the inputs): the partial sums all-reduced, then the bias
 * added once, as model.c does. One rank: the matmul with its bias epilogue, as before. */
static void row_parallel_forward(struct gpt2_cuda *g, void *out, const void *inp, const void *w,
	const void *bias, int K, int OC)
{
	if (g->tp == 1) {
		k_matmul_forward(g->mm, out, NULL, inp, w, bias, g->N, K, OC, g->dt, g->stream);
		return;
	}
	k_matmul_forward(g->mm, out, NULL, inp, w, NULL, g->N, K, OC, g->dt, g->stream);
	tensor_allreduce(g, out, (size_t)g->N * OC);
	k_add_bias(out, bias, g->N, OC, g->dt, g->stream);
}

static void forward(struct gpt2_cuda *g)
{
	const struct gpt2_config *c = &g->c;
	int B = g->B, T = g->T, N = g->N, C = c->channels, L = c->nr_layers;
	int Vp = c->padded_vocab_size;
	/* this tensor rank's attention channels and heads (all of them on one rank) */
	int Cl = g->Cl, NHl = g->NHl;
	enum kdtype dt = g->dt;
	cudaStream_t s = g->stream;
	size_t NC = (size_t)N * C, NCl = (size_t)N * Cl;

	prof_mark(g, PROF_NONE);
	if (g->pp_first)
		k_encoder_forward(g->encoded, g->d_in, param(g, WTE, 0), param(g, WPE, 0), B, T, C,
			dt, s);
	else /* a later pipeline stage: the stream the previous one sent */
		CUDA_CHECK(cudaMemcpyAsync(g->encoded, g->pp_in, NC * g->esz,
			cudaMemcpyDeviceToDevice, s));
	prof_mark(g, PROF_F_ENCODER);
	k_layernorm_forward(g->ln1, g->ln1_mean, g->ln1_rstd, g->encoded, param(g, LN1W, 0),
		param(g, LN1B, 0), N, C, dt, s);
	prof_mark(g, PROF_F_LAYERNORM);
	for (int l = 0; l < L; l++) {
		/* lcl: layer l's offset in a per-layer tensor of this rank's width */
		size_t nc = l * NC, ncl = l * NCl, lc = (size_t)l * C, lcl = (size_t)l * Cl;
		void *residual = l == 0 ? g->encoded : at(g, g->residual3, nc - NC);
		void *ln1 = at(g, g->ln1, nc), *qkv = at(g, g->qkv, 3 * ncl),
		     *atty = at(g, g->atty, ncl);
		void *residual2 = at(g, g->residual2, nc), *ln2 = at(g, g->ln2, nc);
		void *fch = at(g, g->fch, 4 * ncl), *fch_gelu = at(g, g->fch_gelu, 4 * ncl);
		void *residual3 = at(g, g->residual3, nc);

		k_matmul_forward(g->mm, qkv, NULL, ln1, param(g, QKVW, 3 * lcl * C),
			param(g, QKVB, 3 * lcl), N, C, 3 * Cl, dt, s);
		prof_mark(g, PROF_F_QKV);
		(g->attention_tc ? k_attention_forward_tc : k_attention_forward)(atty,
			g->lse + (size_t)l * NHl * N, qkv, B, T, Cl, NHl, dt, s);
		prof_mark(g, PROF_F_ATTENTION);
		row_parallel_forward(g, g->proj, atty, param(g, ATTPROJW, lc * Cl),
			param(g, ATTPROJB, lc), Cl, C);
		prof_mark(g, PROF_F_ATTPROJ);
		k_residual_layernorm_forward(residual2, ln2, g->ln2_mean + (size_t)l * N,
			g->ln2_rstd + (size_t)l * N, residual, g->proj, param(g, LN2W, lc),
			param(g, LN2B, lc), N, C, dt, s);
		prof_mark(g, PROF_F_LAYERNORM);
		k_matmul_forward(g->mm, fch_gelu, fch, ln2, param(g, FCW, 4 * lcl * C),
			param(g, FCB, 4 * lcl), N, C, 4 * Cl, dt, s);
		prof_mark(g, PROF_F_FC); /* the GELU is its epilogue */
		row_parallel_forward(g, g->proj, fch_gelu, param(g, FCPROJW, 4 * lc * Cl),
			param(g, FCPROJB, lc), 4 * Cl, C);
		prof_mark(g, PROF_F_FCPROJ);
		if (l + 1 < L)
			k_residual_layernorm_forward(residual3, at(g, g->ln1, nc + NC),
				g->ln1_mean + (size_t)(l + 1) * N,
				g->ln1_rstd + (size_t)(l + 1) * N, residual2, g->proj,
				param(g, LN1W, lc + C), param(g, LN1B, lc + C), N, C, dt, s);
		else /* on a stage before the last its lnf output is never read: the stage's
		      * residual3 is what leaves it */
			k_residual_layernorm_forward(residual3, g->lnf, g->lnf_mean, g->lnf_rstd,
				residual2, g->proj, param(g, LNFW, 0), param(g, LNFB, 0), N, C, dt,
				s);
		prof_mark(g, PROF_F_LAYERNORM); /* the residual add is fused in */
	}
	if (!g->pp_last)
		return;
	k_matmul_forward(g->mm, g->logits, NULL, g->lnf, param(g, WTE, 0), NULL, N, C, Vp, dt, s);
	prof_mark(g, PROF_F_LMHEAD);
}

/* Backward has queued the kernels that finish layer's gradients (or the embeddings'): zero.c's
 * hook, when armed, starts a bucket it closes (comm_nccl.c orders the bucket after the work
 * queued so far). ev_first is recorded again until a bucket has started: then it marks when the
 * first bucket's gradients were final. */
static void grads_ready(struct gpt2_cuda *g, int layer)
{
	if (!g->shadow.grads_ready)
		return;
	if (g->buckets->stats.nr_buckets == 0)
		CUDA_CHECK(cudaEventRecord(g->ev_first, g->stream));
	g->shadow.grads_ready(g->shadow.grads_ready_arg, &g->shadow, layer);
}

static void backward(struct gpt2_cuda *g, float loss_scale)
{
	const struct gpt2_config *c = &g->c;
	int B = g->B, T = g->T, N = g->N, C = c->channels, L = c->nr_layers;
	int V = c->vocab_size, Vp = c->padded_vocab_size;
	int Cl = g->Cl, NHl = g->NHl; /* as in forward */
	enum kdtype dt = g->dt;
	cudaStream_t s = g->stream;
	size_t NC = (size_t)N * C, NCl = (size_t)N * Cl;

	if (g->pp_last) {
		k_crossentropy(g->logits, g->losses, g->d_tgt, loss_scale, 1, N, V, Vp, dt, s);
		k_loss_accumulate(g->loss_acc, g->losses, N, s);
		prof_mark(g, PROF_B_SOFTMAX); /* softmax, loss and logits gradient in one kernel */
		k_matmul_backward(g->mm, g->dln, grad(g, WTE, 0), NULL, g->logits, g->lnf,
			param(g, WTE, 0), g->scratch, N, C, Vp, dt, s);
		prof_mark(g, PROF_B_LMHEAD);
		CUDA_CHECK(cudaMemsetAsync(g->dresidual, 0, NC * g->esz, s));
		prof_mark(g, PROF_B_ZERO);
		k_layernorm_backward(g->dresidual, grad(g, LNFW, 0), grad(g, LNFB, 0), g->dln,
			at(g, g->residual3, (L - 1) * NC), param(g, LNFW, 0), g->lnf_mean,
			g->lnf_rstd, g->scratch, N, C, dt, s);
		prof_mark(g, PROF_B_LAYERNORM);
	} else { /* a stage before the last: the gradient of its stream, as the next sent it */
		CUDA_CHECK(cudaMemcpyAsync(g->dresidual, g->pp_grad_in, NC * g->esz,
			cudaMemcpyDeviceToDevice, s));
		prof_mark(g, PROF_B_ZERO);
	}
	for (int l = L - 1; l >= 0; l--) {
		size_t nc = l * NC, ncl = l * NCl, lc = (size_t)l * C, lcl = (size_t)l * Cl;
		size_t nl = (size_t)l * N;
		void *residual = l == 0 ? g->encoded : at(g, g->residual3, nc - NC);

		/* row-parallel: the output gradient is whole on every tensor rank, the bias's
		 * gradient too */
		k_matmul_backward(g->mm, g->dfch, grad(g, FCPROJW, 4 * lc * Cl),
			grad(g, FCPROJB, lc), g->dresidual, at(g, g->fch_gelu, 4 * ncl),
			param(g, FCPROJW, 4 * lc * Cl), g->scratch, N, 4 * Cl, C, dt, s);
		prof_mark(g, PROF_B_FCPROJ);
		k_gelu_backward(g->dfch, at(g, g->fch, 4 * ncl), g->dfch, 4 * NCl, dt, s);
		prof_mark(g, PROF_B_GELU);
		/* column-parallel: each tensor rank's part of the input gradient, summed */
		k_matmul_backward(g->mm, g->dln, grad(g, FCW, 4 * lcl * C), grad(g, FCB, 4 * lcl),
			g->dfch, at(g, g->ln2, nc), param(g, FCW, 4 * lcl * C), g->scratch, N, C,
			4 * Cl, dt, s);
		if (g->tp > 1)
			tensor_allreduce(g, g->dln, NC);
		prof_mark(g, PROF_B_FC);
		k_layernorm_backward(g->dresidual, grad(g, LN2W, lc), grad(g, LN2B, lc), g->dln,
			at(g, g->residual2, nc), param(g, LN2W, lc), g->ln2_mean + nl,
			g->ln2_rstd + nl, g->scratch, N, C, dt, s);
		prof_mark(g, PROF_B_LAYERNORM);
		k_matmul_backward(g->mm, g->datty, grad(g, ATTPROJW, lc * Cl),
			grad(g, ATTPROJB, lc), g->dresidual, at(g, g->atty, ncl),
			param(g, ATTPROJW, lc * Cl), g->scratch, N, Cl, C, dt, s);
		prof_mark(g, PROF_B_ATTPROJ);
		(g->attention_tc ? k_attention_backward_tc : k_attention_backward)(g->dqkv,
			g->delta, g->datty, at(g, g->qkv, 3 * ncl), at(g, g->atty, ncl),
			g->lse + (size_t)l * NHl * N, B, T, Cl, NHl, dt, s);
		prof_mark(g, PROF_B_ATTENTION);
		k_matmul_backward(g->mm, g->dln, grad(g, QKVW, 3 * lcl * C), grad(g, QKVB, 3 * lcl),
			g->dqkv, at(g, g->ln1, nc), param(g, QKVW, 3 * lcl * C), g->scratch, N, C,
			3 * Cl, dt, s);
		if (g->tp > 1)
			tensor_allreduce(g, g->dln, NC);
		prof_mark(g, PROF_B_QKV);
		k_layernorm_backward(g->dresidual, grad(g, LN1W, lc), grad(g, LN1B, lc), g->dln,
			residual, param(g, LN1W, lc), g->ln1_mean + nl, g->ln1_rstd + nl,
			g->scratch, N, C, dt, s);
		prof_mark(g, PROF_B_LAYERNORM);
		grads_ready(g, l);
	}
	if (!g->pp_first) /* dresidual: the gradient the previous stage receives */
		return;
	k_encoder_backward(grad(g, WTE, 0), grad(g, WPE, 0), g->dresidual, g->d_in, B, T, C, V,
		g->enc_scratch, g->enc_scratch_bytes, dt, s);
	prof_mark(g, PROF_B_ENCODER);
	grads_ready(g, GPT2_GRADS_EMBEDDINGS);
}

/* ZeRO 2 on more than one rank: each rank holds the summed gradients of its slice only */
static int sharded_norm(const struct gpt2_cuda *g)
{
	return g->stage == 2 && g->world > 1;
}

/* The step's norm and clipping factor into normscale when the slices hold it (ZeRO 2): the
 * slice's sum of squares, one all-reduce of that scalar, then the norm. Outside any graph. */
static void norm_over_slices(struct gpt2_cuda *g, struct comm *comm, float clip)
{
	cudaStream_t s = g->stream;
	k_sum_squares(g->sumsq, g->grads + g->lo, g->hi - g->lo, g->norm_scratch, s);
	if (strcmp(comm->ops->name, "nccl") == 0) {
		comm->cuda_stream = g->stream;
		comm->ops->allreduce_sum(comm, g->sumsq, 1);
	} else {
		float h = 0.0f;
		CUDA_CHECK(cudaMemcpyAsync(&h, g->sumsq, 4, cudaMemcpyDeviceToHost, s));
		sync_stream(g);
		comm->ops->allreduce_sum(comm, &h, 1);
		CUDA_CHECK(cudaMemcpy(g->sumsq, &h, 4, cudaMemcpyHostToDevice));
	}
	k_norm_from_sumsq(g->normscale, g->sumsq, clip, g->world, s);
}

/* Tensor parallelism: the whole model's norm and clipping factor into normscale, as the CPU's
 * gpt2_grad_norm and zero_grad_norm take it: this rank's sum of squares over tp_norm_ranges,
 * summed over the data group where ZeRO 2 sliced the gradients, then over the tensor group.
 * Outside any graph (tensor parallelism has none). */
static void norm_tensor(struct gpt2_cuda *g, struct comm *data, float clip, int world)
{
	cudaStream_t s = g->stream;
	k_sum_squares_ranges(g->sumsq, g->grads, g->norm_offs, g->norm_lens, g->nr_norm,
		g->norm_scratch, s);
	if (sharded_norm(g)) {
		data->cuda_stream = s;
		data->ops->allreduce_sum(data, g->sumsq, 1);
	}
	g->tensor->cuda_stream = s;
	g->tensor->ops->allreduce_sum(g->tensor, g->sumsq, 1);
	k_norm_from_sumsq(g->normscale, g->sumsq, clip, world, s);
}

static void optimizer(struct gpt2_cuda *g, const struct adamw_config *opt, float clip, int world)
{
	cudaStream_t s = g->stream;
	/* else norm_over_slices, norm_tensor or the pipeline's stages (pp_norm) took it */
	if (!sharded_norm(g) && g->tp == 1 && !g->pp_norm)
		k_global_norm(g->normscale, g->grads, g->nr_params, clip, world, g->norm_scratch,
			s);
	/* read at execution time (also when replayed from a graph): the host fills hp_host first */
	CUDA_CHECK(cudaMemcpyAsync(g->hp, g->hp_host, 3 * 4, cudaMemcpyHostToDevice, s));
	/* each tensor's part of the rank's parameters [lo, hi): all of them at stage 0. With more
	 * than one rank the bf16 copy is cast whole after the all-gather. */
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		float wd = gpt2_param_is_decayed(k) ? opt->weight_decay : 0.0f;
		if (g->unused[k]) /* a zero gradient would still decay it */
			continue;
		size_t a = g->offs[k] > g->lo ? g->offs[k] : g->lo;
		size_t b = g->offs[k] + g->sizes[k] < g->hi ? g->offs[k] + g->sizes[k] : g->hi;
		if (a >= b)
			continue;
		void *p =
			g->dt == KDT_F32 || (g->zero && g->world > 1) ? NULL : at(g, g->params, a);
		k_adamw(g->master + a, p, g->dt, g->grads + a, g->m + (a - g->lo),
			g->v + (a - g->lo), b - a, g->hp, g->normscale + 1, opt->beta1, opt->beta2,
			opt->eps, wd, s);
	}
}

/* ZeRO 1 and 2 over a comm without device buffers (MPI): buf (flat) through host memory */
static float *host_flat(struct gpt2_cuda *g)
{
	if (!g->h_flat) {
		g->h_flat = (float *)malloc(g->flat * 4);
		if (!g->h_flat) {
			fprintf(stderr, "ferry train: out of memory\n");
			exit(1);
		}
	}
	return g->h_flat;
}

/* Stage 2: the rank's slice of the summed gradients at grads + lo (the rest undefined) */
static void reduce_scatter_grads(struct gpt2_cuda *g, struct comm *comm)
{
	size_t bytes = g->flat * 4;
	if (strcmp(comm->ops->name, "nccl") == 0) {
		comm->cuda_stream = g->stream;
		comm->ops->reduce_scatter_sum(comm, g->grads, g->slice);
		return;
	}
	float *h = host_flat(g);
	CUDA_CHECK(cudaMemcpyAsync(h, g->grads, bytes, cudaMemcpyDeviceToHost, g->stream));
	sync_stream(g);
	comm->ops->reduce_scatter_sum(comm, h, g->slice);
	CUDA_CHECK(cudaMemcpy(g->grads + g->lo, h + g->lo, g->slice * 4, cudaMemcpyHostToDevice));
}

/* Stage 1 and 2 after the update of the slice: every rank's master weights, then the bf16 copy */
static void allgather_master(struct gpt2_cuda *g, struct comm *comm)
{
	size_t bytes = g->flat * 4;
	if (strcmp(comm->ops->name, "nccl") == 0) {
		comm->cuda_stream = g->stream;
		comm->ops->allgather(comm, g->master, g->slice);
	} else {
		float *h = host_flat(g);
		CUDA_CHECK(cudaMemcpyAsync(h + g->lo, g->master + g->lo, g->slice * 4,
			cudaMemcpyDeviceToHost, g->stream));
		sync_stream(g);
		comm->ops->allgather(comm, h, g->slice);
		CUDA_CHECK(cudaMemcpy(g->master, h, bytes, cudaMemcpyHostToDevice));
	}
	if (g->dt != KDT_F32)
		k_cast(g->params, g->dt, g->master, KDT_F32, g->nr_params, g->stream);
}

/* The first call runs fn eagerly: its first cuBLASLt calls choose algorithms and load modules,
 * work that must not happen under capture. The next captures fn into gr->exec; from then on it
 * is replayed. */
static void run_graph(struct gpt2_cuda *g, struct graph *gr, void (*fn)(struct gpt2_cuda *))
{
	if (!gr->warm) {
		fn(g);
		gr->warm = 1;
		return;
	}
	if (!gr->exec) {
		cudaGraph_t graph;
		CUDA_CHECK(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal));
		fn(g);
		CUDA_CHECK(cudaStreamEndCapture(g->stream, &graph));
		check_kernels(); /* a launch that failed under capture */
		CUDA_CHECK(cudaGraphInstantiate(&gr->exec, graph, 0));
		CUDA_CHECK(cudaGraphDestroy(graph));
	}
	CUDA_CHECK(cudaGraphLaunch(gr->exec, g->stream));
}

/* A graph that no longer fits its settings: captured again at the next call. */
static void drop_graph(struct graph *gr)
{
	if (gr->exec)
		cudaGraphExecDestroy(gr->exec);
	gr->exec = NULL;
}

static void step_fn(struct gpt2_cuda *g)
{
	forward(g);
	backward(g, g->graph_loss_scale);
}

static void update_fn(struct gpt2_cuda *g)
{
	optimizer(g, &g->graph_opt, g->graph_clip, g->graph_world);
}

extern "C" int gpt2_cuda_profile(struct gpt2_cuda *g, double *secs)
{
	if (g->use_graph)
		return -1;
	for (int i = 0; i < PROF_EVENTS; i++)
		CUDA_CHECK(cudaEventCreate(&g->prof.ev[i]));
	g->prof.secs = secs;
	return 0;
}

extern "C" void gpt2_cuda_zero_grad(struct gpt2_cuda *g)
{
	/* the padding too: a reduce-scatter (ZeRO 2) leaves anything there */
	CUDA_CHECK(cudaMemsetAsync(g->grads, 0, g->flat * 4, g->stream));
	CUDA_CHECK(cudaMemsetAsync(g->loss_acc, 0, sizeof(double), g->stream));
}

static void load_batch(struct gpt2_cuda *g, const struct loader_batch *b)
{
	size_t bytes = (size_t)g->N * 4;
	if (b->d_inputs) {
		if (b->ready_event)
			CUDA_CHECK(cudaStreamWaitEvent(g->stream, (cudaEvent_t)b->ready_event, 0));
		CUDA_CHECK(cudaMemcpyAsync(g->d_in, b->d_inputs, bytes, cudaMemcpyDeviceToDevice,
			g->stream));
		CUDA_CHECK(cudaMemcpyAsync(g->d_tgt, b->d_targets, bytes, cudaMemcpyDeviceToDevice,
			g->stream));
		/* The loader refills the slot once these copies have run, not when it is told. */
		if (b->consumed_event)
			CUDA_CHECK(cudaEventRecord((cudaEvent_t)b->consumed_event, g->stream));
	} else {
		gpt2_cuda_set_tokens(g, b->inputs, b->targets);
	}
}

extern "C" void gpt2_cuda_micro_step(struct gpt2_cuda *g, const struct loader_batch *b,
	float loss_scale)
{
	load_batch(g, b);
	if (g->use_graph) {
		if (loss_scale != g->graph_loss_scale)
			drop_graph(&g->graph_step);
		g->graph_loss_scale = loss_scale;
		run_graph(g, &g->graph_step, step_fn);
	} else {
		forward(g);
		backward(g, loss_scale);
	}
}

extern "C" void gpt2_cuda_reduce_begin(struct gpt2_cuda *g)
{
	struct zero *z = g->buckets;
	/* a replayed graph makes none of the host's calls the buckets need: the single
	 * all-reduce after backward then; and only a comm of device buffers (NCCL) */
	if (!z || !z->overlap || g->use_graph || !g->data || !g->data->ops->sync)
		return;
	g->data->cuda_stream = g->stream;
	zero_reduce_begin(z, &g->shadow, g->data);
	g->armed = 1;
}

/* The buckets backward started: the stream waits for them on the device (comm_nccl.c's
 * wait_all), timed by ev_reduce and ev_reduced. zero_reduce_grads' end without its averaging,
 * which the GPU does in its norm and AdamW (world). */
static void buckets_wait(struct gpt2_cuda *g, struct comm *comm)
{
	struct zero *z = g->buckets;
	g->shadow.grads_ready = NULL;
	z->armed = 0;
	g->armed = 0;
	comm->cuda_stream = g->stream;
	CUDA_CHECK(cudaEventRecord(g->ev_reduce, g->stream));
	comm->ops->wait_all(comm);
	CUDA_CHECK(cudaEventRecord(g->ev_reduced, g->stream));
	g->timed = 1;
	g->overlapped = 1;
	g->nr_buckets = z->stats.nr_buckets;
}

/* A comm of device buffers (NCCL, the one with a sync) reduces even alone: that is how one GPU
 * checks the NCCL path against the plain one (tests/gpu/test_comm_nccl_gpu.c). `ferry train`
 * alone runs comm none, which has none. */
static int reduces(const struct comm *comm)
{
	return comm && (comm->world_size > 1 || comm->ops->sync);
}

/* The gradients summed over comm after backward, in one collective timed on the stream, or
 * the buckets backward started waited for; stage 2 reduce-scatters and takes its norm. */
static void reduce_grads(struct gpt2_cuda *g, struct comm *comm, float grad_clip)
{
	int world = comm->world_size;
	if (g->armed) {
		buckets_wait(g, comm);
		return;
	}
	CUDA_CHECK(cudaEventRecord(g->ev_reduce, g->stream));
	if (world > 1 && g->stage == 2) {
		reduce_scatter_grads(g, comm);
	} else if (strcmp(comm->ops->name, "nccl") == 0) {
		comm->cuda_stream = g->stream;
		comm->ops->allreduce_sum(comm, g->grads, g->nr_params);
	} else {
		/* MPI without CUDA awareness: through host memory (slow; use NCCL on GPUs) */
		size_t bytes = g->nr_params * 4;
		float *h = (float *)malloc(bytes);
		if (!h) {
			fprintf(stderr, "ferry train: out of memory\n");
			exit(1);
		}
		CUDA_CHECK(cudaMemcpyAsync(h, g->grads, bytes, cudaMemcpyDeviceToHost, g->stream));
		sync_stream(g);
		comm->ops->allreduce_sum(comm, h, g->nr_params);
		/* on the stream: the optimizer after it must see the summed gradients */
		CUDA_CHECK(cudaMemcpyAsync(g->grads, h, bytes, cudaMemcpyHostToDevice, g->stream));
		free(h);
	}
	CUDA_CHECK(cudaEventRecord(g->ev_reduced, g->stream));
	g->timed = 1;
	g->overlapped = 0;
	g->nr_buckets = 1;
	if (world > 1 && g->stage == 2 && g->tp == 1)
		norm_over_slices(g, comm, grad_clip);
}

extern "C" void gpt2_cuda_update(struct gpt2_cuda *g, struct comm *comm,
	const struct adamw_config *opt, float lr, float grad_clip, int t)
{
	int world = comm ? comm->world_size : 1;
	if (reduces(comm))
		reduce_grads(g, comm, grad_clip);
	if (g->tp > 1)
		norm_tensor(g, comm, grad_clip, world);
	/* the same arithmetic as gpt2_update computes its bias corrections with */
	g->hp_host[0] = lr;
	g->hp_host[1] = 1.0f - powf(opt->beta1, (float)t);
	g->hp_host[2] = 1.0f - powf(opt->beta2, (float)t);
	if (g->use_graph) {
		if (memcmp(&g->graph_opt, opt, sizeof(*opt)) || g->graph_clip != grad_clip ||
			g->graph_world != world)
			drop_graph(&g->graph_update);
		g->graph_opt = *opt;
		g->graph_clip = grad_clip;
		g->graph_world = world;
		run_graph(g, &g->graph_update, update_fn);
	} else {
		optimizer(g, opt, grad_clip, world);
	}
	if (world > 1 && g->zero)
		allgather_master(g, comm);
}

extern "C" void gpt2_cuda_reduce_stats(struct gpt2_cuda *g)
{
	float exposed = 0.0f, inflight = 0.0f;
	if (!g->buckets)
		return;
	memset(&g->buckets->stats, 0, sizeof(g->buckets->stats));
	if (!g->timed)
		return;
	g->timed = 0;
	CUDA_CHECK(cudaEventElapsedTime(&exposed, g->ev_reduce, g->ev_reduced));
	inflight = exposed;
	if (g->overlapped)
		CUDA_CHECK(cudaEventElapsedTime(&inflight, g->ev_first, g->ev_reduced));
	g->buckets->stats.nr_buckets = g->nr_buckets;
	g->buckets->stats.exposed_ms = exposed;
	g->buckets->stats.inflight_ms = inflight;
}

extern "C" float gpt2_cuda_step_result(struct gpt2_cuda *g, int accum, float *norm)
{
	double loss = 0.0;
	float ns[2];
	CUDA_CHECK(cudaMemcpyAsync(&loss, g->loss_acc, sizeof(loss), cudaMemcpyDeviceToHost,
		g->stream));
	CUDA_CHECK(
		cudaMemcpyAsync(ns, g->normscale, sizeof(ns), cudaMemcpyDeviceToHost, g->stream));
	sync_stream(g);
	if (norm)
		*norm = ns[0];
	return (float)(loss / accum);
}

/* The loss of the batch forward left in logits, forward only (gpt2_cuda_eval's end). */
static float eval_loss(struct gpt2_cuda *g)
{
	const struct gpt2_config *c = &g->c;
	double loss = 0.0;
	k_crossentropy(g->logits, g->losses, g->d_tgt, 0.0f, 0, g->N, c->vocab_size,
		c->padded_vocab_size, g->dt, g->stream);
	CUDA_CHECK(cudaMemsetAsync(g->eval_acc, 0, sizeof(double), g->stream));
	k_loss_accumulate(g->eval_acc, g->losses, g->N, g->stream);
	CUDA_CHECK(cudaMemcpyAsync(&loss, g->eval_acc, sizeof(loss), cudaMemcpyDeviceToHost,
		g->stream));
	sync_stream(g);
	return (float)loss;
}

extern "C" float gpt2_cuda_eval(struct gpt2_cuda *g, const struct loader_batch *b)
{
	load_batch(g, b);
	forward(g);
	return eval_loss(g);
}

extern "C" void gpt2_cuda_set_tokens(struct gpt2_cuda *g, const int32_t *inputs,
	const int32_t *targets)
{
	size_t bytes = (size_t)g->N * 4;
	CUDA_CHECK(cudaMemcpyAsync(g->d_in, inputs, bytes, cudaMemcpyHostToDevice, g->stream));
	CUDA_CHECK(cudaMemcpyAsync(g->d_tgt, targets, bytes, cudaMemcpyHostToDevice, g->stream));
	/* pageable sources: make sure the copies are done before the caller reuses its buffers */
	sync_stream(g);
}

extern "C" void gpt2_cuda_forward(struct gpt2_cuda *g)
{
	forward(g);
}

extern "C" void gpt2_cuda_backward(struct gpt2_cuda *g, float loss_scale)
{
	backward(g, loss_scale);
}

extern "C" void gpt2_cuda_copy_logits(struct gpt2_cuda *g, float *out)
{
	size_t n = (size_t)g->N * g->c.padded_vocab_size;
	float *tmp;
	CUDA_CHECK(cudaMalloc((void **)&tmp, n * 4)); /* no memset: k_cast writes all of it */
	k_cast(tmp, KDT_F32, g->logits, g->dt, n, g->stream);
	CUDA_CHECK(cudaMemcpyAsync(out, tmp, n * 4, cudaMemcpyDeviceToHost, g->stream));
	sync_stream(g);
	cudaFree(tmp);
}

extern "C" void gpt2_cuda_copy_grads(struct gpt2_cuda *g, float *out)
{
	CUDA_CHECK(cudaMemcpyAsync(out, g->grads, g->nr_params * 4, cudaMemcpyDeviceToHost,
		g->stream));
	sync_stream(g);
}

/* ---- a pipeline stage (pp.h's GPU stage ops) ---- */

/* The activations a micro-batch's backward reads, and its tokens: what each slot of a stage
 * holds apart (lnf, logits, losses and proj are the last stage's, which has one slot, or a
 * layer's scratch). Their fields in g and sizes in bytes; the number of them. */
#define NR_SLOT_FIELDS 16
static int slot_fields(struct gpt2_cuda *g, void **f[NR_SLOT_FIELDS], size_t bytes[NR_SLOT_FIELDS])
{
	size_t N = g->N, L = g->c.nr_layers, NC = N * g->c.channels, NCl = N * g->Cl;
	size_t e = g->esz;
	int n = 0;
#define SLOT_FIELD(field, nbytes)                                                                  \
	do {                                                                                       \
		f[n] = (void **)&g->field;                                                         \
		bytes[n++] = (nbytes);                                                             \
	} while (0)
	SLOT_FIELD(encoded, NC * e);
	SLOT_FIELD(ln1, L * NC * e);
	SLOT_FIELD(qkv, 3 * L * NCl * e);
	SLOT_FIELD(atty, L * NCl * e);
	SLOT_FIELD(residual2, L * NC * e);
	SLOT_FIELD(ln2, L * NC * e);
	SLOT_FIELD(fch, 4 * L * NCl * e);
	SLOT_FIELD(fch_gelu, 4 * L * NCl * e);
	SLOT_FIELD(residual3, L * NC * e);
	SLOT_FIELD(ln1_mean, L * N * 4);
	SLOT_FIELD(ln1_rstd, L * N * 4);
	SLOT_FIELD(ln2_mean, L * N * 4);
	SLOT_FIELD(ln2_rstd, L * N * 4);
	SLOT_FIELD(lse, L * g->NHl * N * 4);
	SLOT_FIELD(d_in, N * 4);
	SLOT_FIELD(d_tgt, N * 4);
#undef SLOT_FIELD
	return n;
}

/* Points g's fields at slot k's set. */
static void use_slot(struct gpt2_cuda *g, int k)
{
	void **f[NR_SLOT_FIELDS];
	size_t bytes[NR_SLOT_FIELDS];
	int n = slot_fields(g, f, bytes);
	if (!g->slot_ptrs || k == g->slot)
		return;
	for (int i = 0; i < n; i++)
		*f[i] = g->slot_ptrs[(size_t)k * NR_SLOT_FIELDS + i];
	g->slot = k;
}

/* Slot 0's set back in g's fields (gpt2_cuda_free frees those), the others freed. */
static void pp_free_slots(struct gpt2_cuda *g)
{
	if (!g->slot_ptrs)
		return;
	use_slot(g, 0);
	for (size_t i = NR_SLOT_FIELDS; i < (size_t)g->nr_slots * NR_SLOT_FIELDS; i++)
		cudaFree(g->slot_ptrs[i]);
	free(g->slot_ptrs);
	g->slot_ptrs = NULL;
}

extern "C" int gpt2_cuda_pp_stage(struct gpt2_cuda *g, int first, int last, int nr_slots, char *err,
	size_t errlen)
{
	void **f[NR_SLOT_FIELDS];
	size_t bytes[NR_SLOT_FIELDS];
	int n = slot_fields(g, f, bytes);
	if (g->tp > 1 || g->zero || g->use_graph || nr_slots < 1) {
		snprintf(err, errlen,
			"--device cuda --pipeline-parallel: a GPU stage is built without tensor "
			"parallelism, ZeRO 1/2 and CUDA graphs");
		return -EINVAL;
	}
	g->pp_first = first;
	g->pp_last = last;
	g->pp_norm = 1;
	g->unused[WPE] = !first;
	g->unused[WTE] = !first && !last;
	g->unused[LNFW] = g->unused[LNFB] = !last;
	g->slot_ptrs = (void **)calloc((size_t)nr_slots * NR_SLOT_FIELDS, sizeof(void *));
	if (!g->slot_ptrs) {
		snprintf(err, errlen, "out of memory");
		return -EINVAL;
	}
	g->nr_slots = nr_slots;
	g->slot = 0;
	for (int i = 0; i < n; i++)
		g->slot_ptrs[i] = *f[i];
	for (int k = 1; k < nr_slots; k++)
		for (int i = 0; i < n; i++)
			g->slot_ptrs[(size_t)k * NR_SLOT_FIELDS + i] = dmalloc(bytes[i]);
	size_t NC = (size_t)g->N * g->c.channels;
	g->pp_recv[0] = dmalloc(NC * g->esz);
	g->pp_recv[1] = dmalloc(NC * g->esz);
	if ((first || last) && !(first && last))
		g->wte_other = (float *)dmalloc(g->sizes[WTE] * 4);
	if (!last) { /* the head's logits, the largest activation, never run here */
		CUDA_CHECK(cudaFree(g->logits));
		g->logits = dmalloc(16);
	}
	CUDA_CHECK(cudaDeviceSynchronize()); /* dmalloc's memsets, on the legacy stream */
	return 0;
}

extern "C" void *gpt2_cuda_pp_recv(struct gpt2_cuda *g, int grad)
{
	return g->pp_recv[grad ? 1 : 0];
}

extern "C" size_t gpt2_cuda_pp_stream_bytes(const struct gpt2_cuda *g)
{
	return (size_t)g->N * g->c.channels * g->esz;
}

extern "C" void gpt2_cuda_pp_forward(struct gpt2_cuda *g, int i, const struct loader_batch *b,
	const void *stream_in)
{
	use_slot(g, i % g->nr_slots);
	load_batch(g, b);
	g->pp_in = stream_in;
	forward(g);
}

extern "C" void gpt2_cuda_pp_backward(struct gpt2_cuda *g, int i, const void *grad_in,
	float loss_scale)
{
	use_slot(g, i % g->nr_slots);
	g->pp_grad_in = grad_in;
	/* FERRY_TRAIN_PROFILE: the transfers queued since the forward count for no layer */
	prof_mark(g, PROF_NONE);
	backward(g, loss_scale);
}

extern "C" const void *gpt2_cuda_pp_stream_out(struct gpt2_cuda *g)
{
	size_t NC = (size_t)g->N * g->c.channels;
	return at(g, g->residual3, (size_t)(g->c.nr_layers - 1) * NC);
}

extern "C" const void *gpt2_cuda_pp_grad_out(struct gpt2_cuda *g)
{
	return g->dresidual;
}

extern "C" void gpt2_cuda_pp_sync(struct gpt2_cuda *g, struct comm *pipe)
{
	pipe->cuda_stream = g->stream;
	sync_stream(g);
}

extern "C" float gpt2_cuda_pp_eval_loss(struct gpt2_cuda *g)
{
	return eval_loss(g);
}

/* On the stream: the peer's gradient arrives before the add runs. a + b on one end, b + a on
 * the other: the same bits. */
extern "C" void gpt2_cuda_pp_exchange_wte(struct gpt2_cuda *g, struct comm *pipe, int peer)
{
	size_t n = g->sizes[WTE];
	pipe->cuda_stream = g->stream;
	pipe->ops->sendrecv(pipe, grad(g, WTE, 0), n * 4, peer, g->wte_other, n * 4, peer);
	k_add_bias(grad(g, WTE, 0), g->wte_other, 1, (int)n, KDT_F32, g->stream);
}

/* the data group's ranks, whose summed gradients the update divides by */
static int data_world(const struct gpt2_cuda *g)
{
	return g->data && g->data->world_size > 1 ? g->data->world_size : 1;
}

extern "C" void gpt2_cuda_pp_reduce(struct gpt2_cuda *g)
{
	if (data_world(g) > 1)
		reduce_grads(g, g->data, 0.0f);
}

extern "C" double gpt2_cuda_pp_sum_squares(struct gpt2_cuda *g, int count_wte)
{
	size_t lo = count_wte ? 0 : g->sizes[WTE];
	double D = data_world(g);
	float h = 0.0f;
	/* what the stage does not use has a zero gradient and adds nothing */
	k_sum_squares(g->sumsq, g->grads + lo, g->nr_params - lo, g->norm_scratch, g->stream);
	CUDA_CHECK(cudaMemcpyAsync(&h, g->sumsq, 4, cudaMemcpyDeviceToHost, g->stream));
	sync_stream(g);
	return (double)h / (D * D); /* of the mean: the gradients are the D ranks' sum */
}

extern "C" void gpt2_cuda_pp_update(struct gpt2_cuda *g, const struct adamw_config *opt, float lr,
	float grad_scale, float norm, int t)
{
	int world = data_world(g);
	/* read by the queued copies when they run: the host waited for the stream since the
	 * last update (the step's loss) */
	g->hp_host[0] = lr;
	g->hp_host[1] = 1.0f - powf(opt->beta1, (float)t);
	g->hp_host[2] = 1.0f - powf(opt->beta2, (float)t);
	g->hp_host[3] = norm;
	g->hp_host[4] = grad_scale / (float)world; /* k_global_norm's factor: of the summed */
	CUDA_CHECK(cudaMemcpyAsync(g->normscale, g->hp_host + 3, 2 * 4, cudaMemcpyHostToDevice,
		g->stream));
	optimizer(g, opt, 0.0f, world);
}
