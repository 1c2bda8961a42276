/* tests/gpu/bench_attention: the attention kernels alone at GPT-2 124M's shape (B=16, T=1024,
 * NH=12, HS=64 by default; B T NH HS as arguments), forward and backward, on CUDA cores in bf16
 * and fp32 and on tensor cores in bf16 (where k_attention_tc_supported): the mean time of REPS
 * launches after WARMUP, and TFLOP/s counting the causal half only (forward 2 matmuls =
 * 4·B·NH·T²·HS/2 FLOPs, backward 5 = 2.5 times that). One "key: value" line per measurement,
 * for train_gpu.sh. Exits 77 without a GPU, 1 on a CUDA error. */
#include "tests/gpu/gpu_test.h"

enum { WARMUP = 3, REPS = 20 };
enum pass { FORWARD, FORWARD_TC, BACKWARD, BACKWARD_TC };
static const char *const pass_names[] = { "forward", "forward tensor cores", "backward",
	"backward tensor cores" };

struct shape {
	int B, T, NH, HS;
};

/* Milliseconds per call of pass over REPS calls, timed with events. */
static double time_ms(const struct shape *sh, enum kdtype dt, enum pass pass, void *qkv, void *out,
	float *lse, void *dout, void *dqkv, float *delta)
{
	int B = sh->B, T = sh->T, NH = sh->NH, C = sh->NH * sh->HS;
	cudaEvent_t e0, e1;
	float ms = 0.0f;
	CUDA_CHECK(cudaEventCreate(&e0));
	CUDA_CHECK(cudaEventCreate(&e1));
	for (int i = 0; i < WARMUP + REPS; i++) {
		if (i == WARMUP)
			CUDA_CHECK(cudaEventRecord(e0, 0));
		if (pass == BACKWARD)
			k_attention_backward(dqkv, delta, dout, qkv, out, lse, B, T, C, NH, dt, 0);
		else if (pass == BACKWARD_TC)
			k_attention_backward_tc(dqkv, delta, dout, qkv, out, lse, B, T, C, NH, dt,
				0);
		else if (pass == FORWARD_TC)
			k_attention_forward_tc(out, lse, qkv, B, T, C, NH, dt, 0);
		else
			k_attention_forward(out, lse, qkv, B, T, C, NH, dt, 0);
	}
	CUDA_CHECK(cudaEventRecord(e1, 0));
	CUDA_CHECK(cudaEventSynchronize(e1));
	CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	return ms / REPS;
}

static void bench(const struct shape *sh, enum kdtype dt, uint64_t *rng)
{
	size_t no = (size_t)sh->B * sh->T * sh->NH * sh->HS, nq = 3 * no;
	float *h = hrand(nq, 1, rng);
	void *qkv = dev_from(h, nq, dt), *dout = dev_from(h, no, dt), *out, *dqkv;
	float *lse, *delta;
	CUDA_CHECK(cudaMalloc(&out, no * kdtype_bytes(dt)));
	CUDA_CHECK(cudaMalloc(&dqkv, nq * kdtype_bytes(dt)));
	CUDA_CHECK(cudaMalloc((void **)&lse, (size_t)sh->B * sh->NH * sh->T * 4));
	CUDA_CHECK(cudaMalloc((void **)&delta, (size_t)sh->B * sh->NH * sh->T * 4));
	double flops = 2.0 * sh->B * sh->NH * (double)sh->T * sh->T * sh->HS;
	for (int p = FORWARD; p <= BACKWARD_TC; p++) {
		char err[256];
		if ((p == FORWARD_TC || p == BACKWARD_TC) &&
			!k_attention_tc_supported(sh->NH * sh->HS, sh->NH, dt))
			continue;
		double ms = time_ms(sh, dt, (enum pass)p, qkv, out, lse, dout, dqkv, delta);
		if (k_error(err, sizeof(err))) {
			printf("error: %s\n", err);
			exit(1);
		}
		printf("attention %s %s: %.3f ms, %.1f TFLOP/s\n", pass_names[p], kdtype_name(dt),
			ms, (p >= BACKWARD ? 2.5 : 1.0) * flops / (ms * 1e-3) / 1e12);
	}
	cudaFree(qkv), cudaFree(dout), cudaFree(out), cudaFree(dqkv), cudaFree(lse);
	cudaFree(delta);
	free(h);
}

int main(int argc, char **argv)
{
	struct shape sh = { 16, 1024, 12, 64 };
	uint64_t rng = 0x5eed;
	if (argc == 5) {
		sh = (struct shape){ atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]) };
	} else if (argc != 1) {
		fprintf(stderr, "usage: bench_attention [B T NH HS]\n");
		return 1;
	}
	if (sh.B < 1 || sh.T < 1 || !k_attention_supported(sh.NH * sh.HS, sh.NH)) {
		fprintf(stderr, "bench_attention: unsupported shape B=%d T=%d NH=%d HS=%d\n", sh.B,
			sh.T, sh.NH, sh.HS);
		return 1;
	}
	skip_without_gpu("bench_attention");
	printf("shape: B=%d T=%d NH=%d HS=%d\n", sh.B, sh.T, sh.NH, sh.HS);
	bench(&sh, KDT_BF16, &rng);
	bench(&sh, KDT_F32, &rng);
	return 0;
}
