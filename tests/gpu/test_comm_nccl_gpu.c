/* tests/gpu/: the GPU trainer's gradient reduction through NCCL (train/comm_nccl.c) on one rank
 * against no comm at all. A sum over one rank is the rank's own gradients, so 6 steps of 2
 * micro-batches give the same losses and weights bit for bit: with the single all-reduce after
 * backward, and with zero.c's buckets started during it on the side stream (--overlap on,
 * 1 KiB buckets: one per layer and one for the embeddings), fp32 and bf16. The step's
 * reduction stats say so (buckets counted, exposed <= in flight). Every host wait of the NCCL
 * runs goes through the watched sync. The grid's groups on GPU ranks: a split of the one-rank
 * world (comm_nccl.c's split, ncclCommSplit) is a communicator of one whose all-reduces, fp32
 * and bf16, leave device buffers as they were, and training over it equals the plain run.
 * Exits 77 without a GPU. */
#include "tests/gpu/gpu_test.h"

#include "train/comm.h"
#include "train/gpt_cuda.h"
#include "train/model.h"
#include "train/zero.h"

#define B         4
#define T         64
#define ACCUM     2
#define STEPS     6
#define NR_TOKENS 8192

static int32_t corpus[NR_TOKENS];
static const struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
#define LR   1e-3f
#define CLIP 1.0f

static void make_corpus(uint64_t *rng)
{
	int32_t t = 0;
	for (int i = 0; i < NR_TOKENS; i++) {
		float u = urand(rng);
		t = u > 0.8f ? (int32_t)((u + 1.0f) * 127.0f) % 256 : (t * 31 + 7) % 256;
		corpus[i] = t;
	}
}

static void batch(int n, int32_t *inp, int32_t *tgt)
{
	for (int b = 0; b < B; b++) {
		int start = ((n * B + b) * (T + 1)) % (NR_TOKENS - T - 1);
		memcpy(inp + b * T, corpus + start, T * 4);
		memcpy(tgt + b * T, corpus + start + 1, T * 4);
	}
}

/* One run's results. */
struct run {
	float loss[STEPS];
	struct zero_comm_stats stats[STEPS];
	float *weights; /* (nr_params) after the last step */
};

/* STEPS steps from m0's weights over comm c (NULL: none) with the zero z (NULL: none; its
 * overlap says whether the last micro-step's backward starts buckets). */
static void train(const struct gpt2 *m0, int bf16, struct comm *c, struct zero *z, struct run *r)
{
	struct gpt2_cuda_opts o = { .bf16 = bf16, .zero = z, .comm = c };
	char err[256];
	struct gpt2_cuda *g = gpt2_cuda_new(m0, B, T, &o, err, sizeof(err));
	if (!g) {
		printf("FAIL: gpt2_cuda_new: %s\n", err);
		exit(1);
	}
	for (int s = 0; s < STEPS; s++) {
		float norm;
		gpt2_cuda_zero_grad(g);
		for (int micro = 0; micro < ACCUM; micro++) {
			int32_t inp[B * T], tgt[B * T];
			struct loader_batch lb = { 0 };
			batch(s * ACCUM + micro, inp, tgt);
			lb.inputs = inp;
			lb.targets = tgt;
			if (micro == ACCUM - 1)
				gpt2_cuda_reduce_begin(g);
			gpt2_cuda_micro_step(g, &lb, 1.0f / (B * T * ACCUM));
		}
		gpt2_cuda_update(g, c, &opt, LR, CLIP, s + 1);
		r->loss[s] = gpt2_cuda_step_result(g, ACCUM, &norm);
		if (z) {
			gpt2_cuda_reduce_stats(g);
			r->stats[s] = z->stats;
		}
	}
	struct gpt2 *h = gpt2_new(&m0->config, 1, 1);
	gpt2_cuda_store(g, h);
	r->weights = hzero(m0->nr_params);
	memcpy(r->weights, h->params_memory, m0->nr_params * 4);
	gpt2_free(h);
	gpt2_cuda_free(g);
}

/* 0 when a and b logged the same losses and ended with the same weights, bit for bit */
static double differs(const struct run *a, const struct run *b, size_t nr_params)
{
	return memcmp(a->loss, b->loss, sizeof(a->loss)) == 0 &&
			       memcmp(a->weights, b->weights, nr_params * 4) == 0
		       ? 0.0
		       : 1.0;
}

/* 0 when every step reduced in want buckets, exposed within in flight */
static double stats_wrong(const struct run *r, int want)
{
	for (int s = 0; s < STEPS; s++) {
		const struct zero_comm_stats *st = &r->stats[s];
		if (st->nr_buckets != want || st->exposed_ms > st->inflight_ms + 1e-3 ||
			st->exposed_ms < 0.0) {
			printf("# step %d: %d bucket(s) (want %d), exposed %.3f of %.3f ms\n",
				s + 1, st->nr_buckets, want, st->exposed_ms, st->inflight_ms);
			return 1.0;
		}
	}
	printf("# %d bucket(s) a step; last step exposed %.3f of %.3f ms\n", want,
		r->stats[STEPS - 1].exposed_ms, r->stats[STEPS - 1].inflight_ms);
	return 0.0;
}

int main(void)
{
	skip_without_gpu("test_comm_nccl_gpu");
	char err[256], *args[] = { "train", NULL }, **argv = args;
	int argc = 1;
	uint64_t rng = 42;
	make_corpus(&rng);
	struct gpt2_config cfg = { T, 256, 256, 3, 4, 128 };
	struct gpt2 *m0 = gpt2_new(&cfg, B, T);
	gpt2_init_random(m0, &rng);
	size_t P = m0->nr_params;

	/* NCCL on one rank, as comm_init would start it for more: the launch of a lone process */
	struct comm c;
	memset(&c, 0, sizeof(c));
	if (launch_read(&c.launch, err, sizeof(err)) < 0 || c.launch.world_size != 1) {
		printf("FAIL: run this as one process (launch: %s)\n", err);
		return 1;
	}
	c.ops = &comm_nccl_ops;
	c.share_id = comm_share_id_tcp; /* one rank: nothing to hand out */
	if (c.ops->init(&c, &argc, &argv, err, sizeof(err)) < 0) {
		printf("FAIL: comm nccl init: %s\n", err);
		return 1;
	}
	/* The buckets, as zero_set_overlap would arm them on more ranks (it keeps the overlap
	 * for more than one only, where it is worth something) */
	struct zero z;
	if (zero_init(&z, m0, &c, 0, err, sizeof(err)) < 0) {
		printf("FAIL: zero_init: %s\n", err);
		return 1;
	}
	table_header();
	for (int bf16 = 0; bf16 <= 1; bf16++) {
		const char *dt = bf16 ? "bf16" : "fp32";
		struct run plain, single, buckets;
		char what[64];
		train(m0, bf16, NULL, NULL, &plain);
		z.overlap = 0;
		train(m0, bf16, &c, &z, &single);
		z.overlap = 1;
		z.bucket_bytes = 1024;
		train(m0, bf16, &c, &z, &buckets);
		snprintf(what, sizeof(what), "nccl all-reduce = plain (%d steps)", STEPS);
		report(what, dt, differs(&plain, &single, P), 0.0);
		report("nccl all-reduce: 1 collective a step", dt, stats_wrong(&single, 1), 0.0);
		snprintf(what, sizeof(what), "nccl buckets = plain (%d steps)", STEPS);
		report(what, dt, differs(&plain, &buckets, P), 0.0);
		report("nccl buckets: L + 1 a step, E <= F", dt,
			stats_wrong(&buckets, cfg.nr_layers + 1), 0.0);
		printf("# %s losses step 1 / %d: %.6f / %.6f\n", dt, STEPS, plain.loss[0],
			plain.loss[STEPS - 1]);
		free(plain.weights);
		free(single.weights);
		free(buckets.weights);
	}
	struct comm sub;
	if (c.ops->split(&c, 0, 0, &sub, err, sizeof(err)) < 0) {
		printf("FAIL: split: %s\n", err);
		return 1;
	}
	report("split of 1 rank: rank 0 of 1", "-", sub.rank != 0 || sub.world_size != 1, 0.0);
	{
		size_t n = 1000;
		float *x = hrand(n, 1, &rng), *y = hzero(n), *x16 = hzero(n);
		float *d32 = dev_from(x, n, KDT_F32);
		void *d16 = dev_from(x, n, KDT_BF16);
		dev_to(x16, d16, n, KDT_BF16);
		sub.cuda_stream = NULL;
		sub.ops->allreduce_sum(&sub, d32, n);
		sub.ops->allreduce_sum_bf16(&sub, d16, n);
		sub.ops->sync(&sub);
		dev_to(y, d32, n, KDT_F32);
		report("split: all-reduce of 1 rank = its buffer", "fp32", rel_err(y, x, n), 0.0);
		dev_to(y, d16, n, KDT_BF16);
		report("split: all-reduce of 1 rank = its buffer", "bf16", rel_err(y, x16, n), 0.0);
		cudaFree(d32), cudaFree(d16);
		free(x), free(y), free(x16);
	}
	{
		struct run plain, viasplit;
		z.overlap = 0;
		train(m0, 1, NULL, NULL, &plain);
		train(m0, 1, &sub, &z, &viasplit);
		report("nccl all-reduce over a split = plain", "bf16",
			differs(&plain, &viasplit, P), 0.0);
		free(plain.weights);
		free(viasplit.weights);
	}
	sub.ops->done(&sub);
	c.ops->done(&c);
	zero_done(&z);
	gpt2_free(m0);
	report_kernel_errors();
	printf("test_comm_nccl_gpu: %d check(s) failed\n", nr_failed);
	return nr_failed ? 1 : 0;
}
