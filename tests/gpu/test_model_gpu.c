/* tests/gpu/: the whole GPU model (train/gpt_cuda.cu) against the CPU trainer (train/model.c)
 * on the same weights and batches: fp32 logits, loss and every gradient tensor, 10 optimizer
 * steps; bf16 losses within 2% of fp32 over 100 steps; bit-identical reruns, with and without
 * a CUDA graph. Exits 77 without a GPU. */
#include "tests/gpu/gpu_test.h"

#include "train/gpt_cuda.h"
#include "train/model.h"

#define B         4
#define T         64
#define NR_TOKENS 8192

static const char *tensor_names[GPT2_NR_PARAM_TENSORS] = { "wte", "wpe", "ln1w", "ln1b", "qkvw",
	"qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw",
	"lnfb" };

static int32_t corpus[NR_TOKENS];

/* A learnable stream: each token mostly follows from the previous one. */
static void make_corpus(uint64_t *rng)
{
	int32_t t = 0;
	for (int i = 0; i < NR_TOKENS; i++) {
		float u = urand(rng);
		t = u > 0.8f ? (int32_t)((u + 1.0f) * 127.0f) % 256 : (t * 31 + 7) % 256;
		corpus[i] = t;
	}
}

static void batch(int step, int32_t *inp, int32_t *tgt)
{
	for (int b = 0; b < B; b++) {
		int start = ((step * B + b) * (T + 1)) % (NR_TOKENS - T - 1);
		memcpy(inp + b * T, corpus + start, T * 4);
		memcpy(tgt + b * T, corpus + start + 1, T * 4);
	}
}

static const struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
#define LR   1e-3f
#define CLIP 1.0f

static float cpu_step(struct gpt2 *m, int step)
{
	int32_t inp[B * T], tgt[B * T];
	batch(step, inp, tgt);
	gpt2_zero_grad(m);
	gpt2_forward(m, inp, tgt);
	gpt2_backward(m, inp, tgt, 1.0f / (B * T));
	float norm = gpt2_grad_norm(m);
	gpt2_update(m, &opt, LR, norm > CLIP ? CLIP / norm : 1.0f, step + 1);
	return m->mean_loss;
}

static float gpu_step(struct gpt2_cuda *g, int step)
{
	int32_t inp[B * T], tgt[B * T];
	struct loader_batch lb = { 0 };
	batch(step, inp, tgt);
	lb.inputs = inp;
	lb.targets = tgt;
	gpt2_cuda_zero_grad(g);
	gpt2_cuda_micro_step(g, &lb, 1.0f / (B * T));
	gpt2_cuda_update(g, NULL, &opt, LR, CLIP, step + 1);
	float norm;
	return gpt2_cuda_step_result(g, 1, &norm);
}

int main(void)
{
	skip_without_gpu("test_model_gpu");
	char err[256];
	uint64_t rng = 42;
	make_corpus(&rng);
	struct gpt2_config c = { T, 256, 256, 2, 4, 128 };
	struct gpt2 *m0 = gpt2_new(&c, B, T), *m = gpt2_new(&c, B, T);
	gpt2_init_random(m0, &rng);
	memcpy(m->params_memory, m0->params_memory, m0->nr_params * 4);
	size_t P = m0->nr_params;
	struct gpt2_cuda_opts o32 = { .bf16 = 0 }, o16 = { .bf16 = 1 },
			      o16g = { .bf16 = 1, .cuda_graph = 1 };
	struct gpt2_cuda *g32 = gpt2_cuda_new(m0, B, T, &o32, err, sizeof(err));
	if (!g32) {
		fprintf(stderr, "gpt2_cuda_new: %s\n", err);
		return 1;
	}
	table_header();

	/* one forward and backward, fp32 */
	int32_t inp[B * T], tgt[B * T];
	batch(0, inp, tgt);
	gpt2_forward(m, inp, tgt);
	gpt2_zero_grad(m);
	gpt2_backward(m, inp, tgt, 1.0f / (B * T));
	gpt2_cuda_set_tokens(g32, inp, tgt);
	gpt2_cuda_zero_grad(g32);
	gpt2_cuda_forward(g32);
	float *logits = hzero((size_t)B * T * c.padded_vocab_size);
	gpt2_cuda_copy_logits(g32, logits);
	report("model fp32 logits", "fp32",
		rel_err(logits, m->acts.logits, (size_t)B * T * c.padded_vocab_size), 1e-4);
	gpt2_cuda_backward(g32, 1.0f / (B * T));
	float norm, loss = gpt2_cuda_step_result(g32, 1, &norm);
	report("model fp32 loss", "fp32", fabs(loss - m->mean_loss) / m->mean_loss, 1e-5);
	float *grads = hzero(P);
	gpt2_cuda_copy_grads(g32, grads);
	size_t off = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		char name[64];
		snprintf(name, sizeof(name), "model fp32 grad %s", tensor_names[k]);
		report(name, "fp32", rel_err(grads + off, m->grads_memory + off, m->param_sizes[k]),
			1e-4);
		off += m->param_sizes[k];
	}
	gpt2_cuda_free(g32);

	/* 10 steps, fp32, from the same weights */
	memcpy(m->params_memory, m0->params_memory, P * 4);
	g32 = gpt2_cuda_new(m0, B, T, &o32, err, sizeof(err));
	double worst = 0.0;
	for (int s = 0; s < 10; s++) {
		float lc = cpu_step(m, s), lg = gpu_step(g32, s);
		double e = fabs(lg - lc) / lc;
		worst = e > worst ? e : worst;
	}
	report("10 steps fp32 loss vs CPU", "fp32", worst, 1e-4);
	gpt2_cuda_free(g32);

	/* 100 steps: bf16 against fp32 on the GPU; bf16 twice, the second from a CUDA graph */
	static float l32[100], l16[100], l16g[100];
	g32 = gpt2_cuda_new(m0, B, T, &o32, err, sizeof(err));
	struct gpt2_cuda *g16 = gpt2_cuda_new(m0, B, T, &o16, err, sizeof(err));
	struct gpt2_cuda *g16g = gpt2_cuda_new(m0, B, T, &o16g, err, sizeof(err));
	if (!g16 || !g16g) {
		fprintf(stderr, "gpt2_cuda_new: %s\n", err);
		return 1;
	}
	worst = 0.0;
	for (int s = 0; s < 100; s++) {
		l32[s] = gpu_step(g32, s);
		l16[s] = gpu_step(g16, s);
		l16g[s] = gpu_step(g16g, s);
		double e = fabs(l16[s] - l32[s]) / l32[s];
		worst = e > worst ? e : worst;
	}
	printf("# losses step 1 / 100: fp32 %.5f / %.5f, bf16 %.5f / %.5f\n", l32[0], l32[99],
		l16[0], l16[99]);
	report("100 steps bf16 loss vs fp32", "bf16", worst, 2e-2);
	report("loss decreases over 100 steps", "bf16", l16[99] < l16[0] ? 0.0 : 1.0, 0.0);
	report("bf16 rerun with CUDA graph bit-identical", "bf16",
		memcmp(l16, l16g, sizeof(l16)) == 0 ? 0.0 : 1.0, 0.0);
	/* store and reload: the resumed model continues with the same losses */
	struct gpt2 *saved = gpt2_new(&c, 1, 1);
	gpt2_cuda_store(g16, saved);
	struct gpt2_cuda *g16r = gpt2_cuda_new(saved, B, T, &o16, err, sizeof(err));
	int same = 1;
	for (int s = 100; s < 110; s++) {
		float a = gpu_step(g16, s), b = gpu_step(g16r, s);
		same &= memcmp(&a, &b, sizeof(a)) == 0;
	}
	report("store + new continues bit-identically", "bf16", same ? 0.0 : 1.0, 0.0);
	gpt2_cuda_free(g32);
	gpt2_cuda_free(g16);
	gpt2_cuda_free(g16g);
	gpt2_cuda_free(g16r);
	gpt2_free(saved);
	gpt2_free(m0);
	gpt2_free(m);
	free(logits);
	free(grads);
	report_kernel_errors();
	printf("test_model_gpu: %d check(s) failed\n", nr_failed);
	return nr_failed ? 1 : 0;
}
