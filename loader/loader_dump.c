/* `loader-dump`: drives the public loader API and writes each batch (epoch, position, inputs,
 * targets) to a file, or only times it (--bench). Used by the integration tests, which check
 * the batches against python, and by tests/bench/bench_loader.sh. Not installed. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loader/loader.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: loader-dump --data PATHS [--format auto|llmc|raw-u16|raw-u32|megatron]\n"
		"  [--batch B] [--seq T] [--seed S] [--shuffle] [--rank R --world W]\n"
		"  [--global-batch N (samples per step over all ranks; default B*W)]\n"
		"  [--buffers N] [--block-bytes N] [--window-blocks N] [--steps N]\n"
		"  [--epoch E --position P] [--prefetch K] [--step-ms MS] [--out FILE] [--bench]\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", 1, 0, 'd' },
		{ "format", 1, 0, 'f' },
		{ "batch", 1, 0, 'B' },
		{ "seq", 1, 0, 'T' },
		{ "seed", 1, 0, 's' },
		{ "shuffle", 0, 0, 'S' },
		{ "rank", 1, 0, 'r' },
		{ "world", 1, 0, 'w' },
		{ "buffers", 1, 0, 'n' },
		{ "steps", 1, 0, 'N' },
		{ "epoch", 1, 0, 'e' },
		{ "position", 1, 0, 'p' },
		{ "out", 1, 0, 'o' },
		{ "bench", 0, 0, 'b' },
		{ "verbose", 0, 0, 'v' },
		{ "help", 0, 0, 'h' },
		{ "block-bytes", 1, 0, 'K' },
		{ "window-blocks", 1, 0, 'G' },
		{ "prefetch", 1, 0, 'P' },
		{ "step-ms", 1, 0, 'M' },
		{ "global-batch", 1, 0, 'g' },
		{ 0, 0, 0, 0 },
	};
	struct loader_config cfg = { .batch = 4, .seq_len = 64, .device = -1, .world_size = 1 };
	struct loader_state st = { 0, 0 };
	struct loader *l;
	unsigned long long steps = 10;
	const char *out = NULL;
	bool bench = false, seek = false;
	char err[512];
	FILE *f = NULL;
	double wait = 0, late_wait = 0, t0, step_ms = 0;
	int c, ret;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			cfg.paths = optarg;
			break;
		case 'f':
			if (!strcmp(optarg, "llmc"))
				cfg.format = LOADER_FORMAT_LLMC;
			else if (!strcmp(optarg, "raw-u16"))
				cfg.format = LOADER_FORMAT_RAW_U16;
			else if (!strcmp(optarg, "raw-u32"))
				cfg.format = LOADER_FORMAT_RAW_U32;
			else if (!strcmp(optarg, "megatron"))
				cfg.format = LOADER_FORMAT_MEGATRON;
			else if (strcmp(optarg, "auto")) {
				usage(stderr);
				return 2;
			}
			break;
		case 'B':
			cfg.batch = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'T':
			cfg.seq_len = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 's':
			cfg.seed = strtoull(optarg, NULL, 0);
			break;
		case 'S':
			cfg.shuffle = true;
			break;
		case 'r':
			cfg.rank = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'w':
			cfg.world_size = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'n':
			cfg.nr_buffers = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'K':
			cfg.block_bytes = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'G':
			cfg.window_blocks = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'P':
			cfg.prefetch_batches = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'M':
			step_ms = strtod(optarg, NULL);
			break;
		case 'g':
			cfg.global_batch = strtoull(optarg, NULL, 0);
			break;
		case 'N':
			steps = strtoull(optarg, NULL, 0);
			break;
		case 'e':
			st.epoch = strtoull(optarg, NULL, 0);
			seek = true;
			break;
		case 'p':
			st.position = strtoull(optarg, NULL, 0);
			seek = true;
			break;
		case 'o':
			out = optarg;
			break;
		case 'b':
			bench = true;
			break;
		case 'v':
			cfg.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!cfg.paths) {
		usage(stderr);
		return 2;
	}
	ret = loader_open(&l, &cfg, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "loader-dump: %s\n", err);
		return 1;
	}
	fprintf(stderr, "loader-dump: path %s, %llu steps per epoch, vocab %u\n",
		loader_path_name(l), (unsigned long long)loader_steps_per_epoch(l),
		loader_vocab_size(l));
	if (seek && loader_seek(l, &st) < 0) {
		fprintf(stderr, "loader-dump: cannot seek to %llu/%llu\n",
			(unsigned long long)st.epoch, (unsigned long long)st.position);
		loader_free(l);
		return 1;
	}
	if (out && !(f = fopen(out, "wb"))) {
		fprintf(stderr, "loader-dump: %s: %s\n", out, strerror(errno));
		loader_free(l);
		return 1;
	}
	t0 = now_s();
	for (unsigned long long i = 0; i < steps; i++) {
		struct loader_batch b;
		size_t n = (size_t)cfg.batch * cfg.seq_len;

		ret = loader_next_batch(l, &b);
		if (ret < 0) {
			fprintf(stderr, "loader-dump: batch %llu: %s\n", i, loader_last_error(l));
			break;
		}
		wait += b.wait_ms;
		if (i >= steps / 4)
			late_wait += b.wait_ms; /* once the first reads are over */
		if (step_ms > 0) {
			/* A training step's time, during which the loader reads ahead. */
			struct timespec ts = { (time_t)(step_ms / 1e3),
				(long)((step_ms - (time_t)(step_ms / 1e3) * 1e3) * 1e6) };

			nanosleep(&ts, NULL);
		}
		if (f) {
			uint64_t hdr[2] = { b.state.epoch, b.state.position };

			fwrite(hdr, sizeof(hdr), 1, f);
			fwrite(b.inputs, 4, n, f);
			fwrite(b.targets, 4, n, f);
		} else if (bench) {
			/* Touch what a trainer would read, so nothing is left unread. */
			volatile int32_t sink = b.inputs[0] + b.inputs[n - 1] + b.targets[n - 1];
			(void)sink;
		}
	}
	if (bench && ret == 0) {
		double dt = now_s() - t0;
		double tokens = (double)steps * cfg.batch * cfg.seq_len;
		struct loader_prefetch_info pi;

		loader_get_prefetch(l, &pi);
		printf("tokens %.0f seconds %.4f tokens_per_s %.0f wait_ms_per_batch %.4f "
		       "prefetch %s ahead %llu horizon %llu calls %llu bound %llu started %llu "
		       "late_wait_ms_per_batch %.4f\n",
			tokens, dt, tokens / dt, wait / steps, pi.on ? "on" : "off",
			(unsigned long long)pi.ahead, (unsigned long long)pi.horizon,
			(unsigned long long)pi.nr_calls, (unsigned long long)pi.nr_bound,
			(unsigned long long)pi.nr_started, late_wait / (double)(steps - steps / 4));
	}
	if (f && fclose(f) != 0)
		ret = -EIO;
	loader_free(l);
	return ret < 0 ? 1 : 0;
}
