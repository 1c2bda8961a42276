/* tests/gpu/: the GPU pipeline stage (train/gpt_cuda.cu's gpt2_cuda_pp_*) on one GPU, without
 * NCCL: a 4-layer model split into two stages of 2 layers in one process, the stream and its
 * gradient copied between them where NCCL would send them, 4 micro-batches in 1F1B order (the
 * first stage holds two in flight, so a backward that read the other slot's activations is
 * caught), against the whole model on the same GPU: the loss, every gradient tensor (wte's as
 * the two ends' sum), the stages' shares of the squared norm, and an evaluation's loss, in fp32;
 * then each stage's AdamW moves the tensors it runs and leaves the others' bits. Exits 77
 * without a GPU. Written without a GPU: never run yet. */
#include "tests/gpu/gpu_test.h"

#include "train/gpt_cuda.h"
#include "train/model.h"

#define B         4
#define T         64
#define L         4
#define M         4
#define NR_TOKENS 8192

static const char *tensor_names[GPT2_NR_PARAM_TENSORS] = { "wte", "wpe", "ln1w", "ln1b", "qkvw",
	"qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw",
	"lnfb" };

static int32_t corpus[NR_TOKENS];
static int32_t inputs[M][B * T], targets[M][B * T];

static void make_batches(uint64_t *rng)
{
	int32_t t = 0;
	for (int i = 0; i < NR_TOKENS; i++) {
		float u = urand(rng);
		t = u > 0.8f ? (int32_t)((u + 1.0f) * 127.0f) % 256 : (t * 31 + 7) % 256;
		corpus[i] = t;
	}
	for (int i = 0; i < M; i++)
		for (int b = 0; b < B; b++) {
			int start = ((i * B + b) * (T + 1)) % (NR_TOKENS - T - 1);
			memcpy(inputs[i] + b * T, corpus + start, T * 4);
			memcpy(targets[i] + b * T, corpus + start + 1, T * 4);
		}
}

static struct loader_batch batch(int i)
{
	struct loader_batch lb = { 0 };
	lb.inputs = inputs[i];
	lb.targets = targets[i];
	return lb;
}

static bool layer_tensor(int k)
{
	return k >= 2 && k <= 13;
}

/* A stage's host model: layers [l0, l0 + nl) of whole, and all of its other tensors. */
static struct gpt2 *stage_model(const struct gpt2 *whole, int l0, int nl)
{
	struct gpt2_config c = whole->config;
	c.nr_layers = nl;
	struct gpt2 *s = gpt2_new(&c, 1, 1);
	size_t so = 0, wo = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t n = s->param_sizes[k], from = wo;
		if (layer_tensor(k))
			from += (size_t)l0 * (whole->param_sizes[k] / L);
		memcpy(s->params_memory + so, whole->params_memory + from, n * 4);
		so += s->param_sizes[k];
		wo += whole->param_sizes[k];
	}
	return s;
}

/* dst = src between the stages' streams: they are non-blocking, so the device is waited for
 * on both sides of the copy (a device-to-device cudaMemcpy may return before it is done). */
static void pass(void *dst, const void *src, size_t bytes)
{
	CUDA_CHECK(cudaDeviceSynchronize());
	CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
	CUDA_CHECK(cudaDeviceSynchronize());
}

int main(void)
{
	skip_without_gpu("test_pp_stage_gpu");
	char err[256];
	uint64_t rng = 42;
	make_batches(&rng);
	struct gpt2_config c = { T, 256, 256, L, 4, 128 };
	struct gpt2 *whole = gpt2_new(&c, 1, 1);
	gpt2_init_random(whole, &rng);
	struct gpt2 *h0 = stage_model(whole, 0, L / 2), *h1 = stage_model(whole, L / 2, L / 2);
	struct gpt2_cuda_opts o = { .bf16 = 0 };
	struct gpt2_cuda *gw = gpt2_cuda_new(whole, B, T, &o, err, sizeof(err));
	struct gpt2_cuda *g0 = gpt2_cuda_new(h0, B, T, &o, err, sizeof(err));
	struct gpt2_cuda *g1 = gpt2_cuda_new(h1, B, T, &o, err, sizeof(err));
	if (!gw || !g0 || !g1 || gpt2_cuda_pp_stage(g0, 1, 0, 2, err, sizeof(err)) < 0 ||
		gpt2_cuda_pp_stage(g1, 0, 1, 1, err, sizeof(err)) < 0) {
		printf("test_pp_stage_gpu: FAIL: %s\n", err);
		return 1;
	}
	size_t stream = gpt2_cuda_pp_stream_bytes(g0);
	float scale = 1.0f / (B * T * M);

	/* the whole model: the 4 micro-batches' gradients added up */
	gpt2_cuda_zero_grad(gw);
	for (int i = 0; i < M; i++) {
		struct loader_batch lb = batch(i);
		gpt2_cuda_micro_step(gw, &lb, scale);
	}
	float loss_w = gpt2_cuda_step_result(gw, M, NULL);

	/* two stages in 1F1B order: stage 0 runs micro-batch i + 1's forward before i's
	 * backward, so it holds two in flight, in its two slots */
	gpt2_cuda_zero_grad(g0);
	gpt2_cuda_zero_grad(g1);
	struct loader_batch lb = batch(0);
	gpt2_cuda_pp_forward(g0, 0, &lb, NULL);
	pass(gpt2_cuda_pp_recv(g1, 0), gpt2_cuda_pp_stream_out(g0), stream);
	for (int i = 0; i < M; i++) {
		lb = batch(i);
		gpt2_cuda_pp_forward(g1, i, &lb, gpt2_cuda_pp_recv(g1, 0));
		gpt2_cuda_pp_backward(g1, i, NULL, scale);
		pass(gpt2_cuda_pp_recv(g0, 1), gpt2_cuda_pp_grad_out(g1), stream);
		if (i + 1 < M) {
			lb = batch(i + 1);
			gpt2_cuda_pp_forward(g0, i + 1, &lb, NULL);
			pass(gpt2_cuda_pp_recv(g1, 0), gpt2_cuda_pp_stream_out(g0), stream);
		}
		gpt2_cuda_pp_backward(g0, i, gpt2_cuda_pp_recv(g0, 1), scale);
	}
	float loss_p = gpt2_cuda_step_result(g1, M, NULL);

	float *dw = malloc(whole->nr_params * 4), *d0 = malloc(h0->nr_params * 4),
	      *d1 = malloc(h1->nr_params * 4);
	gpt2_cuda_copy_grads(gw, dw);
	gpt2_cuda_copy_grads(g0, d0);
	gpt2_cuda_copy_grads(g1, d1);
	report_kernel_errors();
	table_header();
	report("loss: 2 stages vs whole", "f32", fabs(loss_p - loss_w) / fabs(loss_w), 1e-6);
	size_t wo = 0, o0 = 0, o1 = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t n = whole->param_sizes[k];
		char what[64];
		snprintf(what, sizeof(what), "grad %s", tensor_names[k]);
		if (layer_tensor(k)) { /* each stage's layers */
			size_t half = n / 2;
			float *both = malloc(n * 4);
			memcpy(both, d0 + o0, half * 4);
			memcpy(both + half, d1 + o1, half * 4);
			report(what, "f32", rel_err(both, dw + wo, n), 1e-5);
			free(both);
		} else if (k == 0) { /* the embedding's on stage 0, the head's on stage 1 */
			float *sum = malloc(n * 4);
			for (size_t j = 0; j < n; j++)
				sum[j] = d0[o0 + j] + d1[o1 + j];
			report(what, "f32", rel_err(sum, dw + wo, n), 1e-5);
			free(sum);
		} else { /* wpe on the first stage, lnf on the last */
			const float *d = k == 1 ? d0 + o0 : d1 + o1;
			report(what, "f32", rel_err(d, dw + wo, n), 1e-5);
		}
		wo += n;
		o0 += h0->param_sizes[k];
		o1 += h1->param_sizes[k];
	}

	/* the stages' shares of the squared norm (pp_grad_norm's): each without wte, and wte's
	 * two parts summed once (the NCCL exchange's result), against the whole model's */
	double ss_w = 0.0, ss_p = gpt2_cuda_pp_sum_squares(g0, 0) + gpt2_cuda_pp_sum_squares(g1, 0);
	for (size_t j = 0; j < whole->nr_params; j++)
		ss_w += (double)dw[j] * dw[j];
	for (size_t j = 0; j < whole->param_sizes[0]; j++) {
		double w = (double)d0[j] + d1[j];
		ss_p += w * w;
	}
	report("norm^2: stages' shares vs whole", "f32", fabs(ss_p - ss_w) / ss_w, 1e-5);

	/* evaluation: forward only through the stages */
	lb = batch(1);
	float eval_w = gpt2_cuda_eval(gw, &lb);
	gpt2_cuda_pp_forward(g0, 0, &lb, NULL);
	pass(gpt2_cuda_pp_recv(g1, 0), gpt2_cuda_pp_stream_out(g0), stream);
	gpt2_cuda_pp_forward(g1, 0, &lb, gpt2_cuda_pp_recv(g1, 0));
	float eval_p = gpt2_cuda_pp_eval_loss(g1);
	report("eval loss: 2 stages vs whole", "f32", fabs(eval_p - eval_w) / fabs(eval_w), 1e-6);
	report_kernel_errors();

	/* AdamW on each stage (pp_update's, after the evaluation: the ends' wte would differ, each
	 * holding its own part of the gradient here): every tensor the stage runs moves, the ones
	 * it never runs (stage 0's lnf, stage 1's wpe) keep their bits, as a zero gradient's
	 * weight decay would not */
	struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
	struct gpt2 *st[2] = { h0, h1 };
	struct gpt2_cuda *sg[2] = { g0, g1 };
	for (int s = 0; s < 2; s++) {
		struct gpt2 *h = st[s];
		float *before = malloc(h->nr_params * 4);
		memcpy(before, h->params_memory, h->nr_params * 4); /* what was uploaded */
		gpt2_cuda_pp_update(sg[s], &opt, 1e-3f, 1.0f, 0.0f, 1);
		gpt2_cuda_store(sg[s], h);
		size_t off = 0;
		for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
			size_t n = h->param_sizes[k], moved = 0;
			for (size_t j = 0; j < n; j++)
				if (memcmp(&before[off + j], &h->params_memory[off + j], 4))
					moved++;
			int used = !((s == 0 && (k == 14 || k == 15)) || (s == 1 && k == 1));
			char what[64];
			snprintf(what, sizeof(what), "adamw: stage %d %s %s", s, tensor_names[k],
				used ? "moves" : "kept");
			/* err 0 where right: used, some weight moved; unused, none did */
			report(what, "f32", used ? (moved ? 0.0 : 1.0) : (double)moved, 0.0);
			off += n;
		}
		free(before);
	}
	report_kernel_errors();

	gpt2_cuda_free(gw);
	gpt2_cuda_free(g0);
	gpt2_cuda_free(g1);
	gpt2_free(whole);
	gpt2_free(h0);
	gpt2_free(h1);
	free(dw);
	free(d0);
	free(d1);
	if (nr_failed) {
		printf("test_pp_stage_gpu: %d check(s) failed\n", nr_failed);
		return 1;
	}
	printf("test_pp_stage_gpu: PASS\n");
	return 0;
}
