/* GPU check of the loader's CUDA staging (loader/stage_cuda.c, widen.cu): batches staged onto
 * the GPU equal the host batches and the tokens in the files (uint16 and uint32, sequential
 * and shuffled), then host-to-device GB/s of the staging path against a plain pinned
 * cudaMemcpyAsync of the same sizes. Exit 0 pass, 1 fail, 77 no GPU.
 * With --cufile MNT SRC, checks the cufile path instead (see check_cufile).
 * usage: loader-gpu-check [--bench-only] [--batches N] | --cufile MNT SRC */
#include "config.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_i.h"
#include "tests/gpu/gpu_presence.h"

#define NR_SHARDS 3
static const uint64_t counts[NR_SHARDS] = { 70001, 4099, 123457 };
static char dir[64];
static int failures;

#define CHECK_CUDA(call)                                                                           \
	do {                                                                                       \
		cudaError_t e_ = (call);                                                           \
		if (e_ != cudaSuccess) {                                                           \
			fprintf(stderr, "loader-gpu-check: %s:%d: %s: %s\n", __FILE__, __LINE__,   \
				#call, cudaGetErrorString(e_));                                    \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static void fail(const char *fmt, const char *what, long a, long b)
{
	fprintf(stderr, "FAIL: ");
	fprintf(stderr, fmt, what, a, b);
	fputc('\n', stderr);
	failures++;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The oracle: token i of shard s, from a hash, independent of the loader. */
static uint32_t token_at(int s, uint64_t i, uint32_t w)
{
	uint64_t x = (s + 7) * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;

	x ^= x >> 31;
	return w == 2 ? (uint32_t)(x & 0xffff) : (uint32_t)(x & 0x7fffffff);
}

static int write_shards(uint32_t w)
{
	for (int s = 0; s < NR_SHARDS; s++) {
		int32_t hdr[256] = { w == 2 ? LLMC_MAGIC_U16 : LLMC_MAGIC_U32,
			w == 2 ? LLMC_VERSION_U16 : LLMC_VERSION_U32, (int32_t)counts[s] };
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "%s/shard_%02d.bin", dir, s);
		f = fopen(path, "wb");
		if (!f)
			return -errno;
		fwrite(hdr, sizeof(hdr), 1, f);
		for (uint64_t i = 0; i < counts[s]; i++) {
			uint32_t t = token_at(s, i, w);

			fwrite(&t, w, 1, f);
		}
		if (fclose(f) != 0)
			return -EIO;
	}
	return 0;
}

static void locate(uint64_t g, uint32_t T, int *shard, uint64_t *tok)
{
	for (int s = 0; s < NR_SHARDS; s++) {
		uint64_t n = counts[s] > T ? (counts[s] - 1) / T : 0;

		if (g < n) {
			*shard = s;
			*tok = g * T;
			return;
		}
		g -= n;
	}
	*shard = -1;
}

/* Reads nr batches from a loader on device 0 and checks, for each, that the device inputs
 * and targets (waited for by their event on our own stream) equal the host ones and the
 * tokens in the files. */
static void check_device_batches(uint32_t w, bool shuffle, uint32_t B, uint32_t T, int nr)
{
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 99,
		.shuffle = shuffle,
		.world_size = 1,
		.nr_buffers = 4,
		.device = 0 };
	size_t n = (size_t)B * T;
	int32_t *h_in = malloc(n * 4), *h_tg = malloc(n * 4);
	struct sampler smp;
	struct loader *l;
	cudaStream_t compute;
	char err[256];
	uint64_t total = 0;

	for (int s = 0; s < NR_SHARDS; s++)
		total += counts[s] > T ? (counts[s] - 1) / T : 0;
	sampler_init(&smp, total, B, 1, 0, 99, shuffle, LOADER_BLOCK_BYTES / (T * w),
		LOADER_WINDOW_BLOCKS, 0);
	if (loader_open(&l, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: loader_open on device 0: %s\n", err);
		failures++;
		free(h_in);
		free(h_tg);
		return;
	}
	CHECK_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
	for (int i = 0; i < nr; i++) {
		struct loader_batch b;
		int bad = 0;

		if (loader_next_batch(l, &b) < 0) {
			fprintf(stderr, "FAIL: batch %d: %s\n", i, loader_last_error(l));
			failures++;
			break;
		}
		if (!b.d_inputs || !b.d_targets || !b.ready_event) {
			fail("%s: batch %ld has no device buffers (%ld)", "staging", i, 0);
			break;
		}
		/* The way a trainer uses it: its stream waits on the event, no device sync. */
		CHECK_CUDA(cudaStreamWaitEvent(compute, (cudaEvent_t)b.ready_event, 0));
		CHECK_CUDA(
			cudaMemcpyAsync(h_in, b.d_inputs, n * 4, cudaMemcpyDeviceToHost, compute));
		CHECK_CUDA(
			cudaMemcpyAsync(h_tg, b.d_targets, n * 4, cudaMemcpyDeviceToHost, compute));
		CHECK_CUDA(cudaStreamSynchronize(compute));
		if (memcmp(h_in, b.inputs, n * 4) != 0)
			bad = fprintf(stderr,
				"FAIL: w=%u shuffle=%d batch %d: device inputs differ "
				"from host inputs\n",
				w, shuffle, i);
		if (memcmp(h_tg, b.targets, n * 4) != 0)
			bad = fprintf(stderr,
				"FAIL: w=%u shuffle=%d batch %d: device targets differ "
				"from host targets\n",
				w, shuffle, i);
		for (uint32_t j = 0; j < B && !bad; j++) {
			uint64_t g = sampler_sample(&smp, b.state.epoch, b.state.position, j),
				 tok = 0;
			int s = -1;

			locate(g, T, &s, &tok);
			if (s < 0)
				bad = fprintf(stderr, "FAIL: sample %llu beyond the dataset\n",
					(unsigned long long)g);
			for (uint32_t t = 0; t < T && !bad; t++) {
				if ((uint32_t)h_in[j * T + t] != token_at(s, tok + t, w) ||
					(uint32_t)h_tg[j * T + t] != token_at(s, tok + t + 1, w))
					bad = fprintf(stderr,
						"FAIL: w=%u shuffle=%d batch %d row %u "
						"col %u: widened token wrong\n",
						w, shuffle, i, j, t);
			}
		}
		failures += bad != 0;
	}
	CHECK_CUDA(cudaStreamDestroy(compute));
	loader_free(l);
	free(h_in);
	free(h_tg);
}

/* GB/s of raw tokens through stage_upload (copy stream, widening, event per batch), slots
 * reused as the reader would reuse them, against cudaMemcpyAsync of the same sizes from
 * pinned memory. Returns the ratio. */
static double bench_staging(uint32_t B, uint32_t T, uint32_t w, int nr)
{
	const uint32_t nr_slots = 4;
	size_t raw_bytes = ((size_t)B * (T + 1) * w + 4095) & ~(size_t)4095;
	size_t bytes = ((size_t)(B - 1) * (T + 1) + T + 1) * w; /* what stage_upload copies */
	struct stage *st;
	char err[256];
	void *pinned, *dev;
	cudaStream_t s;
	cudaEvent_t e0, e1;
	float ms_plain;
	double t0, t_stage, gbs_stage, gbs_plain;

	if (stage_new(&st, 0, nr_slots, raw_bytes, B, T, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: stage_new: %s\n", err);
		failures++;
		return 0;
	}
	for (uint32_t i = 0; i < nr_slots; i++)
		memset(stage_host_buffer(st, i), 0x11 * (i + 1), raw_bytes);
	/* Warm up, then time nr uploads end to end (host clock: what the loader would see). */
	for (int pass = 0; pass < 2; pass++) {
		int n = pass ? nr : 8;

		t0 = now_s();
		for (int i = 0; i < n; i++) {
			struct loader_batch b;
			uint32_t slot = (uint32_t)i % nr_slots;

			if (stage_reclaim(st, slot) < 0 ||
				stage_upload(st, slot, w, T + 1, &b) < 0) {
				fprintf(stderr, "FAIL: staging upload %d\n", i);
				failures++;
				stage_free(st);
				return 0;
			}
		}
		for (uint32_t i = 0; i < nr_slots; i++)
			stage_reclaim(st, i);
		t_stage = now_s() - t0;
	}
	stage_free(st);
	gbs_stage = (double)bytes * nr / t_stage / 1e9;

	CHECK_CUDA(cudaHostAlloc(&pinned, raw_bytes * nr_slots, cudaHostAllocDefault));
	CHECK_CUDA(cudaMalloc(&dev, raw_bytes * nr_slots));
	CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	CHECK_CUDA(cudaEventCreate(&e0));
	CHECK_CUDA(cudaEventCreate(&e1));
	for (int pass = 0; pass < 2; pass++) {
		int n = pass ? nr : 8;

		t0 = now_s();
		CHECK_CUDA(cudaEventRecord(e0, s));
		for (int i = 0; i < n; i++) {
			size_t o = (size_t)(i % nr_slots) * raw_bytes;

			CHECK_CUDA(cudaMemcpyAsync((char *)dev + o, (char *)pinned + o, bytes,
				cudaMemcpyHostToDevice, s));
		}
		CHECK_CUDA(cudaEventRecord(e1, s));
		CHECK_CUDA(cudaEventSynchronize(e1));
		t0 = now_s() - t0;
	}
	CHECK_CUDA(cudaEventElapsedTime(&ms_plain, e0, e1));
	gbs_plain = (double)bytes * nr / t0 / 1e9;
	printf("h2d B=%u T=%u %u-byte tokens, %zu bytes per batch, %d batches:\n", B, T, w, bytes,
		nr);
	printf("  staging path (copy + widen + event) %7.2f GB/s\n", gbs_stage);
	printf("  plain pinned cudaMemcpyAsync        %7.2f GB/s (%.2f GB/s by events)\n",
		gbs_plain, (double)bytes * nr / (ms_plain / 1e3) / 1e9);
	printf("  ratio %.3f (target >= 0.9)\n", gbs_stage / gbs_plain);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cudaStreamDestroy(s);
	cudaFree(dev);
	cudaFreeHost(pinned);
	return gbs_stage / gbs_plain;
}

/* Tokens/s the whole loader delivers to the GPU from files in the page cache (reads,
 * host widening, copy, GPU widening), for the record. */
static void bench_loader(uint32_t B, uint32_t T, int nr)
{
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 1,
		.shuffle = false,
		.world_size = 1,
		.nr_buffers = 4,
		.device = 0 };
	struct loader *l;
	cudaStream_t compute;
	char err[256];
	double t0, wait = 0;

	if (loader_open(&l, &cfg, err, sizeof(err)) < 0)
		return;
	CHECK_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
	t0 = now_s();
	for (int i = 0; i < nr; i++) {
		struct loader_batch b;

		if (loader_next_batch(l, &b) < 0)
			break;
		wait += b.wait_ms;
		CHECK_CUDA(cudaStreamWaitEvent(compute, (cudaEvent_t)b.ready_event, 0));
	}
	CHECK_CUDA(cudaStreamSynchronize(compute));
	t0 = now_s() - t0;
	printf("loader to GPU, sequential, B=%u T=%u: %.1f Mtokens/s, wait %.3f ms/batch\n", B, T,
		(double)nr * B * T / t0 / 1e6, wait / nr);
	cudaStreamDestroy(compute);
	loader_free(l);
}

/* --cufile MNT SRC: the cufile path (loader/gds_cuda.c) on a ferry mount MNT of the directory
 * SRC: file-order batches staged onto device 0 by cuFileRead equal, on the device and on the
 * host, the batches a host-only loader reads from SRC itself; and the path stays cufile (no
 * fallback). 77 when the loader did not take the cufile path (no libcufile, or its driver did
 * not open). */
static int check_cufile(const char *mnt, const char *src)
{
	const uint32_t B = 4, T = 256;
	struct loader_config cfg = { .batch = B, .seq_len = T, .world_size = 1, .nr_buffers = 4 };
	size_t n = (size_t)B * T;
	int32_t *h_in = malloc(n * 4), *h_tg = malloc(n * 4);
	char mnt_glob[4200], src_glob[4200], err[256];
	struct loader *dev = NULL, *ref = NULL;
	cudaStream_t compute;
	int ret = 0;

	snprintf(mnt_glob, sizeof(mnt_glob), "%s/train_*.bin", mnt);
	snprintf(src_glob, sizeof(src_glob), "%s/train_*.bin", src);
	setenv("FERRY_LOADER_CUFILE", "1", 1);
	cfg.paths = mnt_glob;
	cfg.device = 0;
	cfg.verbose = 1;
	if (loader_open(&dev, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: loader_open on %s, device 0: %s\n", mnt_glob, err);
		ret = 1;
		goto out;
	}
	if (strcmp(loader_path_name(dev), "cufile") != 0) {
		printf("SKIP: the loader took the %s path, not cufile\n", loader_path_name(dev));
		ret = 77;
		goto out;
	}
	cfg.paths = src_glob;
	cfg.device = -1;
	cfg.verbose = 0;
	if (loader_open(&ref, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: loader_open on %s: %s\n", src_glob, err);
		ret = 1;
		goto out;
	}
	CHECK_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
	for (int i = 0; i < 60 && !ret; i++) {
		struct loader_batch b, r;

		if (loader_next_batch(dev, &b) < 0 || loader_next_batch(ref, &r) < 0) {
			fprintf(stderr, "FAIL: cufile batch %d: %s / %s\n", i,
				loader_last_error(dev), loader_last_error(ref));
			ret = 1;
			break;
		}
		if (!b.d_inputs || !b.ready_event) {
			fprintf(stderr, "FAIL: cufile batch %d has no device buffers\n", i);
			ret = 1;
			break;
		}
		CHECK_CUDA(cudaStreamWaitEvent(compute, (cudaEvent_t)b.ready_event, 0));
		CHECK_CUDA(
			cudaMemcpyAsync(h_in, b.d_inputs, n * 4, cudaMemcpyDeviceToHost, compute));
		CHECK_CUDA(
			cudaMemcpyAsync(h_tg, b.d_targets, n * 4, cudaMemcpyDeviceToHost, compute));
		CHECK_CUDA(cudaStreamSynchronize(compute));
		if (memcmp(h_in, r.inputs, n * 4) || memcmp(h_tg, r.targets, n * 4) ||
			memcmp(b.inputs, r.inputs, n * 4) || memcmp(b.targets, r.targets, n * 4)) {
			fprintf(stderr,
				"FAIL: cufile batch %d differs from the source files' batch\n", i);
			ret = 1;
		}
	}
	if (!ret && strcmp(loader_path_name(dev), "cufile") != 0) {
		fprintf(stderr, "FAIL: the cufile path fell back to %s\n", loader_path_name(dev));
		ret = 1;
	}
	CHECK_CUDA(cudaStreamDestroy(compute));
	if (!ret)
		printf("PASS: 60 cufile batches equal the source batches\n");
out:
	loader_free(dev);
	loader_free(ref);
	free(h_in);
	free(h_tg);
	return ret;
}

static void CUDART_CB stall(void *arg)
{
	(void)arg;
	usleep(5000);
}

/* A consumer whose stream runs far behind its host thread, as a trainer's does over a few
 * micro-steps: it only queues its copies out of each batch and records consumed_event. The
 * loader must not widen a later batch into a slot before those copies ran. */
static void check_slow_consumer(uint32_t B, uint32_t T, int nr)
{
	struct loader_config cfg = { .paths = dir,
		.batch = B,
		.seq_len = T,
		.seed = 5,
		.shuffle = true,
		.world_size = 1,
		.nr_buffers = 3,
		.device = 0 };
	size_t n = (size_t)B * T;
	int32_t *want = malloc(nr * n * 4), *got = malloc(nr * n * 4), *d_all;
	struct loader *l;
	cudaStream_t compute;
	char err[256];
	int i;

	if (loader_open(&l, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: loader_open on device 0: %s\n", err);
		failures++;
		free(want);
		free(got);
		return;
	}
	CHECK_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
	CHECK_CUDA(cudaMalloc((void **)&d_all, nr * n * 4));
	for (i = 0; i < nr; i++) {
		struct loader_batch b;

		if (loader_next_batch(l, &b) < 0 || !b.d_inputs || !b.consumed_event) {
			fail("%s: batch %ld: no device batch or no consumed_event (%ld)",
				"slow consumer", i, 0);
			break;
		}
		memcpy(want + i * n, b.inputs, n * 4);
		CHECK_CUDA(cudaLaunchHostFunc(compute, stall, NULL));
		CHECK_CUDA(cudaStreamWaitEvent(compute, (cudaEvent_t)b.ready_event, 0));
		CHECK_CUDA(cudaMemcpyAsync(d_all + i * n, b.d_inputs, n * 4,
			cudaMemcpyDeviceToDevice, compute));
		CHECK_CUDA(cudaEventRecord((cudaEvent_t)b.consumed_event, compute));
	}
	CHECK_CUDA(cudaStreamSynchronize(compute));
	CHECK_CUDA(cudaMemcpy(got, d_all, (size_t)i * n * 4, cudaMemcpyDeviceToHost));
	for (int k = 0; k < i; k++)
		if (memcmp(got + k * n, want + k * n, n * 4) != 0) {
			fail("%s: batch %ld of %ld was overwritten before the consumer copied it",
				"slow consumer", k, i);
			break;
		}
	CHECK_CUDA(cudaFree(d_all));
	CHECK_CUDA(cudaStreamDestroy(compute));
	loader_free(l);
	free(want);
	free(got);
}

int main(int argc, char **argv)
{
	int batches = 200, gpu;
	bool bench_only = false;
	char err[256];
	double ratio;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--bench-only"))
			bench_only = true;
		else if (!strcmp(argv[i], "--batches") && i + 1 < argc)
			batches = atoi(argv[++i]);
	}
	gpu = gpu_presence(err, sizeof(err));
	if (gpu < 0) {
		printf("FAIL: %s\n", err);
		return 1;
	}
	if (gpu == 0) {
		printf("SKIP: no CUDA device\n");
		return 77;
	}
	if (argc == 4 && !strcmp(argv[1], "--cufile"))
		return check_cufile(argv[2], argv[3]);
	snprintf(dir, sizeof(dir), "/tmp/ferry_gpu_loader_XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	for (uint32_t w = 2; w <= 4 && !bench_only; w += 2) {
		if (write_shards(w) < 0) {
			fprintf(stderr, "cannot write shards in %s\n", dir);
			failures++;
			break;
		}
		check_device_batches(w, false, 4, 64, 60);
		check_device_batches(w, true, 8, 128, 60);
		check_device_batches(w, true, 1, 4097, 20);
		check_slow_consumer(4, 64, 40);
	}
	ratio = bench_staging(64, 1024, 2, batches);
	bench_staging(16, 4096, 4, batches);
	bench_staging(256, 8192, 2, batches / 4 + 1);
	if (!bench_only && write_shards(2) == 0)
		bench_loader(8, 1024, 40);
	for (int s = 0; s < NR_SHARDS; s++) {
		char path[128];

		snprintf(path, sizeof(path), "%s/shard_%02d.bin", dir, s);
		unlink(path);
	}
	rmdir(dir);
	if (ratio < 0.9)
		printf("NOTE: staging ratio %.3f is below the 0.9 target\n", ratio);
	if (getenv("FERRY_GPU_STRICT") && ratio < 0.9)
		failures++;
	printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
