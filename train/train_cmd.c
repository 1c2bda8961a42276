/* train/: `ferry train`, the CPU reference trainer: batches from the loader, forward and
 * backward (model.c), gradients averaged across ranks (comm.h), AdamW, evaluation, samples,
 * checkpoints and exact resume (ckpt.c), and the run's log.csv and loss.svg (report.c). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "loader/loader.h"
#include "train/agree.h"
#include "train/ckpt.h"
#include "train/comm.h"
#include "train/gpt_cuda.h"
#include "train/guard.h"
#include "train/model.h"
#include "train/report.h"
#include "train/train.h"

/* The settings of a run. All of them are saved in every checkpoint and --resume takes them
 * back (only steps may be raised); what may differ between the parts of one run (threads,
 * --stop-at, --verbose, the output directory) lives in struct train_opts instead. */
struct train_settings {
	char data[PATH_MAX];
	char val[PATH_MAX];  /* "" when no validation set */
	char init[PATH_MAX]; /* llm.c model file the run started from, "" for random */
	int layers, heads, dim, max_seq_len, vocab;
	int seq_len, batch;
	long long total_batch_tokens;
	int steps, warmup;
	float lr, lr_final_frac, weight_decay, grad_clip, beta1, beta2, eps;
	unsigned long long seed;
	int eval_every, val_batches, ckpt_every, keep, sample;
	int world_size;
};

enum setting_type { S_STR, S_INT, S_LL, S_ULL, S_FLOAT };

static const struct setting {
	const char *key;
	enum setting_type type;
	size_t offset;
} settings_table[] = {
#define ST(key, type) { #key, type, offsetof(struct train_settings, key) }
	ST(data, S_STR), ST(val, S_STR), ST(init, S_STR), ST(layers, S_INT), ST(heads, S_INT),
	ST(dim, S_INT), ST(max_seq_len, S_INT), ST(vocab, S_INT), ST(seq_len, S_INT),
	ST(batch, S_INT), ST(total_batch_tokens, S_LL), ST(steps, S_INT), ST(warmup, S_INT),
	ST(lr, S_FLOAT), ST(lr_final_frac, S_FLOAT), ST(weight_decay, S_FLOAT),
	ST(grad_clip, S_FLOAT), ST(beta1, S_FLOAT), ST(beta2, S_FLOAT), ST(eps, S_FLOAT),
	ST(seed, S_ULL), ST(eval_every, S_INT), ST(val_batches, S_INT), ST(ckpt_every, S_INT),
	ST(keep, S_INT), ST(sample, S_INT), ST(world_size, S_INT),
#undef ST
};
#define NR_SETTINGS (sizeof(settings_table) / sizeof(settings_table[0]))

struct train_opts {
	char out[PATH_MAX];
	char resume[PATH_MAX];
	int threads;
	int stop_at; /* 0: run to steps */
	int verbose;
	int cuda, fp32, cuda_graph; /* --device cuda, --precision fp32, --cuda-graph */
	/* --loader-block-bytes, --loader-window-blocks: the shuffled order's shape. Settings of
	 * the run, but kept in the state file (struct ckpt_state) rather than the settings text,
	 * which older checkpoints would fail to parse with keys added; 0 until chosen. */
	uint32_t block_bytes, window_blocks;
	int max_bad_steps; /* --max-bad-steps: non-finite steps in a row that end the run */
};

static struct comm comm;
static struct gpt2_cuda *gpu; /* the GPU trainer (gpt_cuda.h) with --device cuda, else NULL */

/* One line on stderr (rank 0 only, unless every rank has something of its own to say) and
 * the whole job ends: a rank alone must not leave the others waiting in a collective. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ferry train: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	fflush(stdout);
	comm.ops->abort_all(&comm, 1);
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char *settings_format(const struct train_settings *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < NR_SETTINGS; i++) {
		const struct setting *e = &settings_table[i];
		const char *p = (const char *)s + e->offset;
		fprintf(f, "%s ", e->key);
		switch (e->type) {
		case S_STR:
			fprintf(f, "%s", p);
			break;
		case S_INT:
			fprintf(f, "%d", *(const int *)p);
			break;
		case S_LL:
			fprintf(f, "%lld", *(const long long *)p);
			break;
		case S_ULL:
			fprintf(f, "%llu", *(const unsigned long long *)p);
			break;
		case S_FLOAT: /* %.9g: every float prints back to the same bits */
			fprintf(f, "%.9g", *(const float *)p);
			break;
		}
		fprintf(f, "\n");
	}
	fclose(f);
	return buf;
}

static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_float(const char *s, float *out)
{
	char *end;
	errno = 0;
	float v = strtof(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

static int setting_set(struct train_settings *s, const struct setting *e, const char *value)
{
	char *p = (char *)s + e->offset;
	long long v;
	switch (e->type) {
	case S_STR:
		if (strlen(value) >= PATH_MAX || strchr(value, '\n'))
			return -EINVAL;
		strcpy(p, value);
		return 0;
	case S_INT:
		if (parse_ll(value, INT_MIN, INT_MAX, &v) < 0)
			return -EINVAL;
		*(int *)p = (int)v;
		return 0;
	case S_LL:
		if (parse_ll(value, LLONG_MIN, LLONG_MAX, &v) < 0)
			return -EINVAL;
		*(long long *)p = v;
		return 0;
	case S_ULL: {
		char *end;
		errno = 0;
		unsigned long long u = strtoull(value, &end, 10);
		if (errno || end == value || *end || value[0] == '-')
			return -EINVAL;
		*(unsigned long long *)p = u;
		return 0;
	}
	case S_FLOAT:
		return parse_float(value, (float *)p);
	}
	return -EINVAL;
}

/* Parses what settings_format wrote; every key must be there. */
static int settings_parse(struct train_settings *s, const char *text, char *err, size_t errlen)
{
	int seen[NR_SETTINGS] = { 0 };
	memset(s, 0, sizeof(*s));
	const char *line = text;
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line) : strlen(line);
		char buf[PATH_MAX + 64];
		if (n >= sizeof(buf)) {
			snprintf(err, errlen, "saved settings: line too long");
			return -EINVAL;
		}
		memcpy(buf, line, n);
		buf[n] = '\0';
		char *space = strchr(buf, ' ');
		size_t i = 0;
		if (space) {
			*space = '\0';
			for (i = 0; i < NR_SETTINGS; i++)
				if (strcmp(settings_table[i].key, buf) == 0)
					break;
		}
		if (!space || i == NR_SETTINGS || setting_set(s, &settings_table[i], space + 1) < 0) {
			snprintf(err, errlen, "saved settings: bad line '%.60s'", buf);
			return -EINVAL;
		}
		seen[i] = 1;
		line += n + (nl ? 1 : 0);
	}
	for (size_t i = 0; i < NR_SETTINGS; i++)
		if (!seen[i]) {
			snprintf(err, errlen, "saved settings: '%s' missing", settings_table[i].key);
			return -EINVAL;
		}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry train --data GLOB [--val GLOB] --out DIR [options]\n"
		"       ferry train --resume DIR [--steps N] [--threads N]\n"
		"Trains a GPT-2 model on the CPU (fp32) from token shards read by the loader.\n"
		"\n"
		"model:\n"
		"  --model dN           N layers, N heads, 64*N channels (default d6)\n"
		"  --layers N --heads N --dim N   explicit shape (override --model)\n"
		"  --init FILE          start from an llm.c model file (magic 20240326, v3)\n"
		"  --vocab N            vocabulary size when the data does not declare one\n"
		"                       (llm.c shards: 50257 if not given); above every token\n"
		"data:\n"
		"  --data GLOB          training shards (a glob, directory or file)\n"
		"  --val GLOB           validation shards\n"
		"  --seq-len T          tokens per sequence (default 256)\n"
		"  --loader-block-bytes N    bytes of tokens per block of the shuffled order\n"
		"                       (default 2097152; FERRY_LOADER_BLOCK_BYTES when not given)\n"
		"  --loader-window-blocks N  blocks per window per rank (default 8;\n"
		"                       FERRY_LOADER_WINDOW_BLOCKS when not given); both change\n"
		"                       the order like --seed and are saved in checkpoints\n"
		"  --batch B            sequences per micro-batch per rank (default 8)\n"
		"  --total-batch-tokens N  tokens per optimizer step over all ranks; gradients\n"
		"                       are accumulated to reach it (default B*T*ranks)\n"
		"optimization:\n"
		"  --steps N            optimizer steps (default 1000)\n"
		"  --lr X               peak learning rate (default 6e-4)\n"
		"  --warmup N           linear warmup steps (default 100), then cosine decay\n"
		"  --lr-final-frac X    final lr as a fraction of the peak (default 0.1)\n"
		"  --weight-decay X     AdamW decay of the 2-D weights (default 0.1)\n"
		"  --grad-clip X        clip the global gradient norm (default 1.0; 0: off)\n"
		"  --seed N             initialisation, data order and sampling (default 1)\n"
		"run:\n"
		"  --out DIR            log.csv, loss.svg and checkpoints go here\n"
		"  --eval-every N       validation loss every N steps (default 100)\n"
		"  --val-batches N      batches per validation (default 20)\n"
		"  --ckpt-every N       checkpoint every N steps (default 500), and at the end\n"
		"  --keep N             checkpoints kept (default 3)\n"
		"  --sample N           print N generated tokens at each evaluation (default 0)\n"
		"  --threads N          OpenMP threads (results do not depend on it)\n"
		"  --resume DIR         continue the run in DIR from its newest checkpoint that\n"
		"                       verifies, with its saved settings; only --steps may be raised\n"
		"  --stop-at N          stop after step N with a checkpoint (to resume later)\n"
		"  --max-bad-steps N    a step whose loss or gradient norm is NaN or infinite is\n"
		"                       skipped (weights and moments unchanged); N such steps in\n"
		"                       a row end the run with exit status 1 (default 5; 0: never)\n"
		"  --verbose            per-rank details on stderr\n"
		"  --device cpu|cuda    where to train (default cpu); cuda: one GPU per process\n"
		"  --precision bf16|fp32  GPU weights, activations and matmuls (default bf16;\n"
		"                       master weights, moments and gradients are fp32 always)\n"
		"  --cuda-graph         replay each GPU step from a CUDA graph\n"
		"  --help\n"
		"SIGTERM, SIGINT or SIGUSR1 stop the run after the current step with a checkpoint\n"
		"and exit status 75 (resume with --resume DIR); a second signal ends it at once.\n");
}

enum {
	OPT_DATA = 256, OPT_VAL, OPT_MODEL, OPT_LAYERS, OPT_HEADS, OPT_DIM, OPT_INIT, OPT_VOCAB,
	OPT_SEQ_LEN, OPT_BATCH, OPT_TOTAL, OPT_STEPS, OPT_LR, OPT_WARMUP, OPT_LR_FINAL, OPT_WD,
	OPT_CLIP, OPT_SEED, OPT_OUT, OPT_EVAL_EVERY, OPT_VAL_BATCHES, OPT_CKPT_EVERY, OPT_KEEP,
	OPT_SAMPLE, OPT_THREADS, OPT_RESUME, OPT_STOP_AT, OPT_VERBOSE, OPT_HELP, OPT_DEVICE,
	OPT_PRECISION, OPT_CUDA_GRAPH, OPT_BLOCK_BYTES, OPT_WINDOW_BLOCKS,
	OPT_MAX_BAD_STEPS,
	OPT_END
};

static const struct option long_options[] = {
	{ "data", required_argument, 0, OPT_DATA },
	{ "val", required_argument, 0, OPT_VAL },
	{ "model", required_argument, 0, OPT_MODEL },
	{ "layers", required_argument, 0, OPT_LAYERS },
	{ "heads", required_argument, 0, OPT_HEADS },
	{ "dim", required_argument, 0, OPT_DIM },
	{ "init", required_argument, 0, OPT_INIT },
	{ "vocab", required_argument, 0, OPT_VOCAB },
	{ "seq-len", required_argument, 0, OPT_SEQ_LEN },
	{ "batch", required_argument, 0, OPT_BATCH },
	{ "total-batch-tokens", required_argument, 0, OPT_TOTAL },
	{ "steps", required_argument, 0, OPT_STEPS },
	{ "lr", required_argument, 0, OPT_LR },
	{ "warmup", required_argument, 0, OPT_WARMUP },
	{ "lr-final-frac", required_argument, 0, OPT_LR_FINAL },
	{ "weight-decay", required_argument, 0, OPT_WD },
	{ "grad-clip", required_argument, 0, OPT_CLIP },
	{ "seed", required_argument, 0, OPT_SEED },
	{ "out", required_argument, 0, OPT_OUT },
	{ "eval-every", required_argument, 0, OPT_EVAL_EVERY },
	{ "val-batches", required_argument, 0, OPT_VAL_BATCHES },
	{ "ckpt-every", required_argument, 0, OPT_CKPT_EVERY },
	{ "keep", required_argument, 0, OPT_KEEP },
	{ "sample", required_argument, 0, OPT_SAMPLE },
	{ "threads", required_argument, 0, OPT_THREADS },
	{ "resume", required_argument, 0, OPT_RESUME },
	{ "stop-at", required_argument, 0, OPT_STOP_AT },
	{ "verbose", no_argument, 0, OPT_VERBOSE },
	{ "help", no_argument, 0, OPT_HELP },
	{ "device", required_argument, 0, OPT_DEVICE },
	{ "precision", required_argument, 0, OPT_PRECISION },
	{ "cuda-graph", no_argument, 0, OPT_CUDA_GRAPH },
	{ "loader-block-bytes", required_argument, 0, OPT_BLOCK_BYTES },
	{ "loader-window-blocks", required_argument, 0, OPT_WINDOW_BLOCKS },
	{ "max-bad-steps", required_argument, 0, OPT_MAX_BAD_STEPS },
	{ 0, 0, 0, 0 },
};

/* An int option in [lo, hi], or the run ends with one line naming the option. */
static int int_arg(const char *name, const char *value, long long lo, long long hi)
{
	long long v;
	if (parse_ll(value, lo, hi, &v) < 0)
		die("--%s: '%s' is not an integer in [%lld, %lld]", name, value, lo, hi);
	return (int)v;
}

static float float_arg(const char *name, const char *value, float lo, float hi)
{
	float v;
	if (parse_float(value, &v) < 0 || v < lo || v > hi)
		die("--%s: '%s' is not a number in [%g, %g]", name, value, lo, hi);
	return v;
}

static void copy_path(char *dst, const char *name, const char *value)
{
	if (strlen(value) >= PATH_MAX || strchr(value, '\n'))
		die("--%s: path too long or holds a newline", name);
	strcpy(dst, value);
}

static void defaults(struct train_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->layers = s->heads = 6;
	s->dim = 384;
	s->seq_len = 256;
	s->batch = 8;
	s->steps = 1000;
	s->warmup = 100;
	s->lr = 6e-4f;
	s->lr_final_frac = 0.1f;
	s->weight_decay = 0.1f;
	s->grad_clip = 1.0f;
	s->beta1 = 0.9f;
	s->beta2 = 0.95f;
	s->eps = 1e-8f;
	s->seed = 1;
	s->eval_every = 100;
	s->val_batches = 20;
	s->ckpt_every = 500;
	s->keep = 3;
}

/* Fills s and o from argv; given[opt] says which options the user gave. */
static void parse_args(int argc, char **argv, struct train_settings *s, struct train_opts *o,
	int given[OPT_END])
{
	defaults(s);
	memset(o, 0, sizeof(*o));
	o->max_bad_steps = GUARD_DEFAULT_MAX_BAD_STEPS;
	int layers = 0, heads = 0, dim = 0, model_n = 6;
	optind = 1;
	opterr = 0;
	for (;;) {
		int idx = 0;
		int c = getopt_long(argc, argv, "", long_options, &idx);
		if (c == -1)
			break;
		if (c == '?' || c == ':') {
			const char *bad = argv[optind - 1];
			die("unknown option or missing value: '%s' (see --help)", bad ? bad : "");
		}
		given[c] = 1;
		const char *name = long_options[idx].name;
		switch (c) {
		case OPT_DATA:
			copy_path(s->data, name, optarg);
			break;
		case OPT_VAL:
			copy_path(s->val, name, optarg);
			break;
		case OPT_MODEL:
			if (optarg[0] != 'd')
				die("--model: '%s' is not dN (d6, d12, d24 ...)", optarg);
			model_n = int_arg(name, optarg + 1, 1, 1024);
			break;
		case OPT_LAYERS:
			layers = int_arg(name, optarg, 1, 1024);
			break;
		case OPT_HEADS:
			heads = int_arg(name, optarg, 1, 1024);
			break;
		case OPT_DIM:
			dim = int_arg(name, optarg, 1, 65536);
			break;
		case OPT_INIT:
			copy_path(s->init, name, optarg);
			break;
		case OPT_VOCAB:
			s->vocab = int_arg(name, optarg, 1, 1 << 24);
			break;
		case OPT_SEQ_LEN:
			s->seq_len = int_arg(name, optarg, 1, 1 << 16);
			break;
		case OPT_BATCH:
			s->batch = int_arg(name, optarg, 1, 1 << 16);
			break;
		case OPT_TOTAL: {
			long long v;
			if (parse_ll(optarg, 1, 1LL << 40, &v) < 0)
				die("--%s: '%s' is not a positive integer", name, optarg);
			s->total_batch_tokens = v;
			break;
		}
		case OPT_STEPS:
			s->steps = int_arg(name, optarg, 1, INT_MAX);
			break;
		case OPT_LR:
			s->lr = float_arg(name, optarg, 0.0f, 10.0f);
			break;
		case OPT_WARMUP:
			s->warmup = int_arg(name, optarg, 0, INT_MAX);
			break;
		case OPT_LR_FINAL:
			s->lr_final_frac = float_arg(name, optarg, 0.0f, 1.0f);
			break;
		case OPT_WD:
			s->weight_decay = float_arg(name, optarg, 0.0f, 10.0f);
			break;
		case OPT_CLIP:
			s->grad_clip = float_arg(name, optarg, 0.0f, 1e9f);
			break;
		case OPT_SEED: {
			char *end;
			errno = 0;
			s->seed = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-')
				die("--seed: '%s' is not a non-negative integer", optarg);
			break;
		}
		case OPT_OUT:
			copy_path(o->out, name, optarg);
			break;
		case OPT_EVAL_EVERY:
			s->eval_every = int_arg(name, optarg, 0, INT_MAX);
			break;
		case OPT_VAL_BATCHES:
			s->val_batches = int_arg(name, optarg, 1, INT_MAX);
			break;
		case OPT_CKPT_EVERY:
			s->ckpt_every = int_arg(name, optarg, 0, INT_MAX);
			break;
		case OPT_KEEP:
			s->keep = int_arg(name, optarg, 1, 1 << 20);
			break;
		case OPT_SAMPLE:
			s->sample = int_arg(name, optarg, 0, 1 << 20);
			break;
		case OPT_THREADS:
			o->threads = int_arg(name, optarg, 1, 4096);
			break;
		case OPT_RESUME:
			copy_path(o->resume, name, optarg);
			break;
		case OPT_STOP_AT:
			o->stop_at = int_arg(name, optarg, 1, INT_MAX);
			break;
		case OPT_MAX_BAD_STEPS:
			o->max_bad_steps = int_arg(name, optarg, 0, INT_MAX);
			break;
		case OPT_VERBOSE:
			o->verbose = 1;
			break;
		case OPT_DEVICE:
			if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda"))
				die("--device: '%s' is not cpu or cuda", optarg);
			o->cuda = strcmp(optarg, "cuda") == 0;
			break;
		case OPT_PRECISION:
			if (strcmp(optarg, "bf16") && strcmp(optarg, "fp32"))
				die("--precision: '%s' is not bf16 or fp32", optarg);
			o->fp32 = strcmp(optarg, "fp32") == 0;
			break;
		case OPT_CUDA_GRAPH:
			o->cuda_graph = 1;
			break;
		case OPT_BLOCK_BYTES:
			o->block_bytes = (uint32_t)int_arg(name, optarg, 1, LOADER_MAX_BLOCK_BYTES);
			break;
		case OPT_WINDOW_BLOCKS:
			o->window_blocks = (uint32_t)int_arg(name, optarg, 1, LOADER_MAX_WINDOW_BLOCKS);
			break;
		case OPT_HELP:
			if (comm.rank == 0)
				usage(stdout);
			comm_done(&comm);
			exit(0);
		}
	}
	if (optind < argc)
		die("unexpected argument '%s' (see --help)", argv[optind]);
	s->layers = layers ? layers : model_n;
	s->heads = heads ? heads : model_n;
	s->dim = dim ? dim : 64 * model_n;
}

/* The model's shape from the settings and, with --init, from the file; checks it. */
static void model_config(const struct train_settings *s, struct gpt2_config *c)
{
	char err[512];
	if (s->init[0]) {
		if (ckpt_read_model_config(s->init, c, err, sizeof(err)) < 0)
			die("%s", err);
		if (c->vocab_size != s->vocab)
			die("--init %s: vocabulary %d, the data's is %d", s->init, c->vocab_size,
				s->vocab);
	} else {
		c->max_seq_len = s->max_seq_len;
		c->vocab_size = s->vocab;
		c->padded_vocab_size = gpt2_padded_vocab(s->vocab);
		c->nr_layers = s->layers;
		c->nr_heads = s->heads;
		c->channels = s->dim;
	}
	if (c->channels % c->nr_heads != 0)
		die("--dim %d is not a multiple of --heads %d", c->channels, c->nr_heads);
	if (s->seq_len > c->max_seq_len)
		die("--seq-len %d exceeds the model's %d positions", s->seq_len, c->max_seq_len);
}

static int batch_seq_len; /* T of every batch: a token's row and column in the batch */

/* Every token of the batch in [0, V), else one line naming the shard and where in it the
 * token lies (inputs (j, t) are token t of row j's sample, targets token t + 1). */
static void check_batch(const struct loader *l, const struct loader_batch *b, size_t n, int V,
	const char *what)
{
	const int32_t *arrays[2] = { b->inputs, b->targets };
	for (int a = 0; a < 2; a++)
		for (size_t i = 0; i < n; i++) {
			if (arrays[a][i] >= 0 && arrays[a][i] < V)
				continue;
			const char *path;
			uint64_t index;
			loader_token_source(l, &b->state, (uint32_t)(i / batch_seq_len),
				(uint32_t)(i % batch_seq_len) + (uint32_t)a, &path, &index);
			die("%s: %s: token %u (token %llu of the file) is not below the vocabulary "
			    "size %d (--vocab)",
				what, path, (uint32_t)arrays[a][i], (unsigned long long)index, V);
		}
}

/* A batch the loader could not give: its one-line reason names the shard (errno's text only
 * when it has none). */
static void die_loader(const char *what, const struct loader *l, int rc)
{
	const char *why = loader_last_error(l);
	die("%s: %s", what, why && why[0] ? why : strerror(-rc));
}

static uint64_t fnv1a_bytes(const void *data, size_t n)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static size_t loader_batch_tokens; /* B*T: with a GPU the host model has no batch-sized acts */

/* Mean validation loss over val_batches batches from the start of the validation set,
 * averaged across ranks. */
/* FERRY_TRAIN_PROFILE=1: where the training steps' time went, per layer kind, on stderr
 * (evaluation forwards included, as they run through the same model). */
static void print_profile(const struct gpt2 *m, int nr_steps)
{
	double total = 0.0;
	for (int k = 0; k < GPT2_NR_PROF; k++)
		total += m->prof_s[k];
	if (nr_steps < 1 || total <= 0.0)
		return;
	fprintf(stderr, "profile over %d steps: %.1f ms/step in layers\n", nr_steps,
		total * 1e3 / nr_steps);
	for (int k = 0; k < GPT2_NR_PROF; k++)
		fprintf(stderr, "  %-22s %9.2f ms/step %5.1f%%\n", gpt2_prof_names[k],
			m->prof_s[k] * 1e3 / nr_steps, 100.0 * m->prof_s[k] / total);
}

static float evaluate(struct gpt2 *m, struct loader *val, int nr_batches, int V)
{
	struct loader_state start = { 0, 0 };
	if (loader_seek(val, &start) < 0)
		die("validation loader: seek failed");
	double sum = 0.0;
	for (int i = 0; i < nr_batches; i++) {
		struct loader_batch b;
		int rc = loader_next_batch(val, &b);
		if (rc < 0)
			die_loader("validation data", val, rc);
		size_t nr = gpu ? loader_batch_tokens : (size_t)m->B * m->T;
		check_batch(val, &b, nr, V, "validation data");
		if (gpu) {
			sum += gpt2_cuda_eval(gpu, &b);
			continue;
		}
		gpt2_forward(m, b.inputs, b.targets);
		sum += m->mean_loss;
	}
	float loss = (float)(sum / nr_batches);
	comm_allreduce_mean(&comm, &loss, 1);
	return loss;
}

/* Prints nr tokens drawn from the model (temperature 1), byte-level vocabularies as text. */
static void sample(struct gpt2 *gen, int nr, uint64_t *rng, int max_T)
{
	const struct gpt2_config *c = &gen->config;
	int V = c->vocab_size, Vp = c->padded_vocab_size;
	int32_t *tokens = calloc((size_t)max_T, sizeof(int32_t));
	if (!tokens)
		die("out of memory");
	/* a newline for bytes, GPT-2's <|endoftext|> otherwise */
	int len = 1;
	tokens[0] = V <= 256 ? (V > '\n' ? '\n' : 0) : (V > 50256 ? 50256 : 0);
	printf("sample: ");
	for (int i = 0; i < nr; i++) {
		if (len == max_T) { /* the window is full: keep its second half */
			memmove(tokens, tokens + max_T / 2, sizeof(int32_t) * (max_T - max_T / 2));
			len = max_T - max_T / 2;
		}
		gen->T = len;
		gpt2_forward(gen, tokens, NULL);
		const float *z = gen->acts.logits + (size_t)(len - 1) * Vp;
		float maxv = -INFINITY;
		for (int k = 0; k < V; k++)
			maxv = fmaxf(maxv, z[k]);
		double total = 0.0;
		for (int k = 0; k < V; k++)
			total += exp((double)z[k] - maxv);
		double u = rng_uniform(rng) * total, acc = 0.0;
		int next = V - 1;
		for (int k = 0; k < V; k++) {
			acc += exp((double)z[k] - maxv);
			if (u < acc) {
				next = k;
				break;
			}
		}
		tokens[len++] = next;
		if (V <= 256)
			putchar(next == '\n' || next == '\t' || (next >= 32 && next < 127) || next >= 128
					? next
					: '?');
		else
			printf("%d ", next);
	}
	printf("\n");
	fflush(stdout);
	free(tokens);
}

/* log.csv of a resumed run: the rows up to the checkpoint stay, later rows (from a part of the
 * run that went past its last checkpoint) go; points get the kept rows for the plot. */
static void log_truncate(const char *path, int last_step, struct loss_point **points,
	size_t *nr_points, size_t *cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("--resume: %s: %s", path, strerror(errno));
	char tmp[PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *out = fopen(tmp, "w");
	if (!out)
		die("%s: %s", tmp, strerror(errno));
	char line[1024];
	int first = 1;
	while (fgets(line, sizeof(line), f)) {
		if (first) {
			fputs(line, out);
			first = 0;
			continue;
		}
		int step;
		float loss;
		if (sscanf(line, "%d,%f", &step, &loss) != 2 || step > last_step)
			continue;
		fputs(line, out);
		/* the last field is val_loss, empty where not evaluated */
		char *comma = strrchr(line, ',');
		float val = NAN;
		if (comma && comma[1] != '\n' && comma[1] != '\0')
			val = strtof(comma + 1, NULL);
		if (*nr_points == *cap) {
			*cap = *cap ? *cap * 2 : 1024;
			*points = realloc(*points, *cap * sizeof(**points));
			if (!*points)
				die("out of memory");
		}
		(*points)[(*nr_points)++] = (struct loss_point){ step, loss, val };
	}
	fclose(f);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 ||
		rename(tmp, path) != 0)
		die("%s: %s", path, strerror(errno));
}

static void mkdir_p(const char *dir)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			die("%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		die("%s: %s", buf, strerror(errno));
}

/* An order setting from the environment (the knobs before they were options): 0 when unset,
 * else the value, checked as the option is. */
static uint32_t env_order(const char *name, uint32_t max)
{
	const char *v = getenv(name);
	long long n;
	if (!v || !*v)
		return 0;
	if (parse_ll(v, 1, max, &n) < 0)
		die("%s=%s: want an integer in [1, %u]", name, v, max);
	return (uint32_t)n;
}

/* The order settings of the run: a new run takes the options, else the environment, else
 * the loader's defaults; a resumed run takes what its checkpoint saved, and refuses an
 * environment that says otherwise (it would silently be another order). A checkpoint of
 * state version 1 saved none: it resumes with the environment or the defaults, as then. */
static void order_settings(struct train_opts *o, const struct ckpt_state *saved)
{
	static const struct {
		const char *env, *what;
		uint32_t max, def;
	} k[2] = {
		{ "FERRY_LOADER_BLOCK_BYTES", "block bytes", LOADER_MAX_BLOCK_BYTES,
			LOADER_DEFAULT_BLOCK_BYTES },
		{ "FERRY_LOADER_WINDOW_BLOCKS", "window blocks", LOADER_MAX_WINDOW_BLOCKS,
			LOADER_DEFAULT_WINDOW_BLOCKS },
	};
	uint32_t *val[2] = { &o->block_bytes, &o->window_blocks };
	uint32_t from_ckpt[2] = { saved ? saved->loader_block_bytes : 0,
		saved ? saved->loader_window_blocks : 0 };
	for (int i = 0; i < 2; i++) {
		uint32_t env = env_order(k[i].env, k[i].max);
		if (from_ckpt[i]) {
			if (env && env != from_ckpt[i])
				die("--resume: %s=%u, but the run's loader order was saved with %s %u; "
				    "unset it to resume",
					k[i].env, env, k[i].what, from_ckpt[i]);
			*val[i] = from_ckpt[i];
		} else if (!*val[i]) {
			*val[i] = env ? env : k[i].def;
		}
	}
}

/* Takes the run directory for this process: an exclusive flock on DIR/.ferry-train.lock, held
 * (the descriptor is never closed) until the process ends, however it ends, so a stale lock
 * file from a killed run blocks nothing. A second live run on DIR ends here with one line,
 * before it reads or writes anything of the first's. Rank 0 only: the run's files are its. */
static void lock_out_dir(const char *dir)
{
	char path[PATH_MAX + 32], pid[32] = "";
	snprintf(path, sizeof(path), "%s/.ferry-train.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			die("%s: flock: %s", path, strerror(errno));
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		die("%s is in use by another ferry train run%s%s%s; wait for it to end or choose "
		    "another directory",
			dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
	}
	/* The holder's pid, for the message above; only the holder writes it. */
	char line[32];
	int len = snprintf(line, sizeof(line), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)len, 0) != len)
		die("%s: %s", path, strerror(errno));
}

/* --resume's checkpoints that do not verify, newest first: reported once one verifies. */
struct skipped_ckpts {
	FILE *lines;
	int nr;
	uint64_t newest_step;
	char newest_reason[512];
};

static void note_skipped(void *arg, uint64_t step, const char *reason)
{
	struct skipped_ckpts *sk = arg;
	if (sk->nr++ == 0) {
		sk->newest_step = step;
		snprintf(sk->newest_reason, sizeof(sk->newest_reason), "%s", reason);
	}
	if (sk->lines)
		fprintf(sk->lines, "ferry train: --resume: skipping the checkpoint of step %llu: %s\n",
			(unsigned long long)step, reason);
}

/* The newest checkpoint of dir that verifies (ckpt_verify), saying on stderr (rank 0) which
 * newer ones were skipped and why, one line each; none: the run ends with one line. */
static void find_resumable(const char *dir, uint64_t *step)
{
	struct skipped_ckpts sk = { 0 };
	char *text = NULL;
	size_t len = 0;
	sk.lines = open_memstream(&text, &len);
	int rc = ckpt_find_resumable(dir, step, note_skipped, &sk);
	if (sk.lines)
		fclose(sk.lines);
	if (rc == -ENOENT)
		die("--resume %s: no checkpoint there", dir);
	if (rc < 0)
		die("--resume %s: none of its %d checkpoint(s) verifies; the newest (step %llu): %s",
			dir, sk.nr, (unsigned long long)sk.newest_step, sk.newest_reason);
	if (comm.rank == 0 && text)
		fputs(text, stderr);
	free(text);
}

/* The run's checkpoint after step (rank 0 writes, every rank waits): the model, then the state
 * with the loader's position; the log is synced first so that it never lags a checkpoint. */
static void write_checkpoint(const char *dir, int keep, int step, uint64_t rng,
	char *settings_text, struct loader *train_loader, struct gpt2 *m, FILE *log,
	const char *log_path)
{
	char err[PATH_MAX + 256];
	if (comm.rank == 0) {
		struct loader_state ls;
		loader_get_state(train_loader, &ls);
		struct ckpt_state st = { .step = (uint64_t)step, .rng = rng,
			.loader_epoch = ls.epoch, .loader_position = ls.position,
			.settings = settings_text };
		loader_get_order(train_loader, &st.loader_block_bytes, &st.loader_window_blocks);
		if (gpu)
			gpt2_cuda_store(gpu, m);
		if (fsync(fileno(log)) < 0)
			die("%s: %s", log_path, strerror(errno));
		if (ckpt_save(dir, m, &st, keep, err, sizeof(err)) < 0)
			die("checkpoint: %s", err);
	}
	comm_barrier(&comm);
}

/* ---- ranks agree (train/agree.h): settings before anything is sized by them, then the data
 * and what it decides (the vocabulary) before the model is ---- */

/* Every rank ends here alike after the same comparison: each says its own value of the
 * setting that differs, and none aborts the others mid-sentence. */
static void agree_or_exit(struct agree *a)
{
	int i = agree_compare(a, &comm);
	if (i < 0)
		return;
	char line[512];
	agree_format(a, i, comm.rank, line, sizeof(line));
	fprintf(stderr, "ferry train: %s\n", line);
	fflush(stderr);
	fflush(stdout);
	comm_done(&comm);
	exit(1);
}

/* Each saved setting under its option's name (seq_len: --seq-len), and what else must match:
 * the order settings, where the run stops, the device and precision, and the checkpoint a
 * resumed run starts from. */
static void agree_on_settings(const struct train_settings *s, const struct train_opts *o,
	uint64_t start_step)
{
	struct agree a;
	char *text = settings_format(s), name[64], value[64];
	if (!text)
		die("out of memory");
	agree_init(&a);
	for (char *line = text, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		*nl = '\0';
		char *space = strchr(line, ' ');
		*space = '\0';
		snprintf(name, sizeof(name), "--%s", line);
		for (char *p = name; *p; p++)
			if (*p == '_')
				*p = '-';
		agree_add(&a, name, space + 1);
	}
	free(text);
	snprintf(value, sizeof(value), "%u", o->block_bytes);
	agree_add(&a, "--loader-block-bytes", value);
	snprintf(value, sizeof(value), "%u", o->window_blocks);
	agree_add(&a, "--loader-window-blocks", value);
	snprintf(value, sizeof(value), "%d", o->stop_at);
	agree_add(&a, "--stop-at", value);
	agree_add(&a, "--device", o->cuda ? "cuda" : "cpu");
	agree_add(&a, "--precision", o->fp32 ? "fp32" : "bf16");
	if (o->resume[0])
		snprintf(value, sizeof(value), "resumed at step %llu",
			(unsigned long long)start_step);
	else
		snprintf(value, sizeof(value), "a new run");
	agree_add(&a, "--resume (the checkpoint's step)", value);
	agree_or_exit(&a);
}

/* The identity of the data (paths, sizes, versions), the --init file's, and the vocabulary the
 * data decided: a rank whose files differ under the same --data would train another run. */
static void agree_on_data(const struct train_settings *s, const struct loader *train,
	const struct loader *val)
{
	struct agree a;
	char err[PATH_MAX + 256], value[64];
	agree_init(&a);
	if (agree_add_dataset(&a, "--data", train, err, sizeof(err)) < 0)
		die("--data: %s", err);
	if (val && agree_add_dataset(&a, "--val", val, err, sizeof(err)) < 0)
		die("--val: %s", err);
	if (s->init[0]) {
		struct stat sb;
		if (stat(s->init, &sb) < 0)
			die("--init %s: %s", s->init, strerror(errno));
		int64_t id[3] = { (int64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec,
			(int64_t)sb.st_mtim.tv_nsec };
		snprintf(value, sizeof(value), "%lld bytes", (long long)sb.st_size);
		agree_add_hash(&a, "--init file (size or mtime)",
			agree_hash(AGREE_HASH_INIT, id, sizeof(id)), value);
	}
	snprintf(value, sizeof(value), "%d", s->vocab);
	agree_add(&a, "vocabulary (--vocab or the data's)", value);
	agree_or_exit(&a);
}

/* The vocabulary of a new run: what the shards declare, else --vocab, else the loader's guess
 * for the format (50257 for llm.c shards). A declared one is not overridden. */
static void choose_vocab(struct train_settings *s, const struct loader *train,
	const struct loader *val)
{
	uint32_t declared = loader_declared_vocab(train);
	if (s->vocab && declared && (uint32_t)s->vocab != declared)
		die("--vocab %d, but the data declares %u (header[3] of %s)", s->vocab, declared,
			s->data);
	if (!s->vocab)
		s->vocab = (int)loader_vocab_size(train);
	if (!s->vocab)
		die("--data %s: the shards do not say their vocabulary size; give --vocab",
			s->data);
	uint32_t val_declared = val ? loader_declared_vocab(val) : 0;
	if (val_declared && val_declared != (uint32_t)s->vocab)
		die("--val %s declares vocabulary %u, the training data's is %d", s->val,
			val_declared, s->vocab);
}

int train_main(int argc, char **argv)
{
	struct train_settings s;
	struct train_opts o;
	int given[OPT_END] = { 0 };
	char err[1024], path[PATH_MAX + 32];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (comm_init(&comm, &argc, &argv) < 0) {
		fprintf(stderr, "ferry train: MPI initialisation failed\n");
		return 1;
	}
	parse_args(argc, argv, &s, &o, given);
#ifdef _OPENMP
	if (o.threads)
		omp_set_num_threads(o.threads);
#endif

	/* --resume: the settings come from the run's newest checkpoint */
	struct ckpt_state resume_state = { 0 };
	uint64_t start_step = 0;
	if (o.resume[0]) {
		for (int i = 0; i < OPT_END; i++) {
			if (!given[i] || i == OPT_RESUME || i == OPT_STEPS || i == OPT_THREADS ||
				i == OPT_STOP_AT || i == OPT_VERBOSE || i == OPT_MAX_BAD_STEPS)
				continue;
			if (i == OPT_DEVICE || i == OPT_PRECISION || i == OPT_CUDA_GRAPH)
				continue;
			if (i == OPT_OUT)
				die("--resume writes into the run's own directory; drop --out");
			die("--resume takes the run's saved settings; only --steps (raised), "
			    "--threads, --stop-at, --max-bad-steps and --verbose may be given");
		}
		int steps = s.steps;
		if (comm.rank == 0)
			lock_out_dir(o.resume);
		find_resumable(o.resume, &start_step);
		ckpt_paths(o.resume, start_step, NULL, path, sizeof(path));
		if (ckpt_read_state(path, NULL, &resume_state, err, sizeof(err)) < 0)
			die("%s", err);
		if (settings_parse(&s, resume_state.settings, err, sizeof(err)) < 0)
			die("%s: %s", path, err);
		if (given[OPT_STEPS]) {
			if (steps < s.steps)
				die("--steps %d: the run was set for %d; --steps may only be raised",
					steps, s.steps);
			s.steps = steps;
		}
		if (s.world_size != comm.world_size)
			die("--resume: the run used %d ranks, this job has %d", s.world_size,
				comm.world_size);
		snprintf(o.out, sizeof(o.out), "%s", o.resume);
	} else {
		if (!s.data[0])
			die("--data is required (see --help)");
		if (!o.out[0])
			die("--out is required (see --help)");
		if (comm.rank == 0) {
			mkdir_p(o.out);
			lock_out_dir(o.out);
		}
		uint64_t old;
		if (ckpt_latest(o.out, &old) == 0)
			die("%s holds a run with checkpoints; continue it with --resume %s or choose "
			    "another --out",
				o.out, o.out);
		s.world_size = comm.world_size;
	}
	order_settings(&o, o.resume[0] ? &resume_state : NULL);
	if (o.cuda && gpt2_cuda_available(err, sizeof(err)) < 0)
		die("%s", err);
	if (o.stop_at && o.stop_at > s.steps)
		die("--stop-at %d is beyond --steps %d", o.stop_at, s.steps);
	if (o.stop_at && (uint64_t)o.stop_at <= start_step)
		die("--stop-at %d: the run is already at step %llu", o.stop_at,
			(unsigned long long)start_step);
	agree_on_settings(&s, &o, start_step);

	/* data */
	int B = s.batch, T = s.seq_len, W = comm.world_size;
	struct loader_config lc = {
		.paths = s.data,
		.format = LOADER_FORMAT_AUTO,
		.batch = (uint32_t)B,
		.seq_len = (uint32_t)T,
		.seed = s.seed,
		.shuffle = true,
		.rank = (uint32_t)comm.rank,
		.world_size = (uint32_t)W,
		.device = o.cuda ? gpt2_cuda_local_device() : -1,
		.verbose = o.verbose,
		.block_bytes = o.block_bytes,
		.window_blocks = o.window_blocks,
	};
	struct loader *train_loader = NULL, *val_loader = NULL;
	if (loader_open(&train_loader, &lc, err, sizeof(err)) < 0)
		die("--data %s: %s", s.data, err);
	if (s.val[0]) {
		struct loader_config vc = lc;
		vc.paths = s.val;
		vc.shuffle = false;
		if (loader_open(&val_loader, &vc, err, sizeof(err)) < 0)
			die("--val %s: %s", s.val, err);
		uint64_t per_epoch = loader_steps_per_epoch(val_loader);
		if (per_epoch > 0 && (uint64_t)s.val_batches > per_epoch)
			s.val_batches = (int)per_epoch;
	}
	if (!o.resume[0]) {
		choose_vocab(&s, train_loader, val_loader);
		s.max_seq_len = T;
		if (!s.total_batch_tokens)
			s.total_batch_tokens = (long long)B * T * W;
	}
	long long tokens_per_micro = (long long)B * T * W;
	if (s.total_batch_tokens % tokens_per_micro != 0)
		die("--total-batch-tokens %lld is not a multiple of batch*seq-len*ranks = %lld",
			s.total_batch_tokens, tokens_per_micro);
	int accum = (int)(s.total_batch_tokens / tokens_per_micro);
	agree_on_data(&s, train_loader, val_loader);

	/* model */
	struct gpt2_config mc;
	model_config(&s, &mc);
	/* with a GPU the host model only holds weights and moments: no activations for (B, T) */
	struct gpt2 *m = o.cuda ? gpt2_new(&mc, 1, 1) : gpt2_new(&mc, B, T);
	loader_batch_tokens = (size_t)B * T;
	batch_seq_len = T;
	if (!m)
		die("cannot allocate the model (L %d, C %d, B %d, T %d): out of memory",
			mc.nr_layers, mc.channels, B, T);
	/* splitmix64 of the seed: nearby seeds give unrelated streams, and never the state 0 */
	uint64_t rng = s.seed + 0x9E3779B97F4A7C15ULL;
	rng = (rng ^ (rng >> 30)) * 0xBF58476D1CE4E5B9ULL;
	rng = (rng ^ (rng >> 27)) * 0x94D049BB133111EBULL;
	rng ^= rng >> 31;
	if (!rng)
		rng = 1;
	if (o.resume[0]) {
		ckpt_paths(o.resume, start_step, path, NULL, sizeof(path));
		if (ckpt_read_model(path, m, err, sizeof(err)) < 0)
			die("%s", err);
		ckpt_paths(o.resume, start_step, NULL, path, sizeof(path));
		ckpt_state_done(&resume_state);
		if (ckpt_read_state(path, m, &resume_state, err, sizeof(err)) < 0)
			die("%s", err);
		rng = resume_state.rng;
		struct loader_state ls = { resume_state.loader_epoch, resume_state.loader_position };
		if (loader_seek(train_loader, &ls) < 0)
			die("--resume: the loader cannot seek to epoch %llu position %llu",
				(unsigned long long)ls.epoch, (unsigned long long)ls.position);
	} else if (s.init[0]) {
		if (ckpt_read_model(s.init, m, err, sizeof(err)) < 0)
			die("%s", err);
	} else {
		gpt2_init_random(m, &rng);
	}
	if (o.cuda) {
		struct gpt2_cuda_opts go = { lc.device, !o.fp32, o.cuda_graph };
		gpu = gpt2_cuda_new(m, B, T, &go, err, sizeof(err));
		if (!gpu)
			die("%s", err);
	}
	struct gpt2 *gen = s.sample ? gpt2_new_view(m, 1, mc.max_seq_len) : NULL;
	if (s.sample && !gen)
		die("out of memory");

	/* outputs */
	char log_path[PATH_MAX + 16], svg_path[PATH_MAX + 16];
	snprintf(log_path, sizeof(log_path), "%s/log.csv", o.out);
	snprintf(svg_path, sizeof(svg_path), "%s/loss.svg", o.out);
	struct loss_point *points = NULL;
	size_t nr_points = 0, cap = 0;
	FILE *log = NULL;
	if (comm.rank == 0) {
		mkdir_p(o.out);
		if (o.resume[0])
			log_truncate(log_path, (int)start_step, &points, &nr_points, &cap);
		log = fopen(log_path, o.resume[0] ? "a" : "w");
		if (!log)
			die("%s: %s", log_path, strerror(errno));
		if (!o.resume[0])
			fprintf(log, "step,loss,lr,grad_norm,ms,tokens_per_s,data_wait_ms,val_loss\n");
		printf("ferry train: %s model L=%d NH=%d C=%d V=%d (%zu parameters), B=%d T=%d, "
		       "%d rank(s), %d micro-step(s) per step, %d thread(s), loader %s%s\n",
			o.resume[0] ? "resuming" : "new", mc.nr_layers, mc.nr_heads, mc.channels,
			mc.vocab_size, m->nr_params, B, T, W, accum,
#ifdef _OPENMP
			omp_get_max_threads(),
#else
			1,
#endif
			loader_path_name(train_loader),
			!o.cuda ? "" : o.fp32 ? ", cuda fp32" : ", cuda bf16");
		if (o.resume[0])
			printf("ferry train: continuing %s from step %llu to %d\n", o.out,
				(unsigned long long)start_step, s.steps);
	}
	char *settings_text = settings_format(&s);
	if (!settings_text)
		die("out of memory");
	struct adamw_config opt = { s.beta1, s.beta2, s.eps, s.weight_decay };
	float loss_scale = 1.0f / ((float)B * T * accum);
	size_t nr_tokens = (size_t)B * T;
	int last_step = o.stop_at ? o.stop_at : s.steps;

	const char *prof_env = getenv("FERRY_TRAIN_PROFILE");
	m->profile = !gpu && prof_env && prof_env[0] && strcmp(prof_env, "0") != 0;
	/* hooks of guard.h: the non-finite step guard and the stop signals */
	struct guard guard;
	guard_init(&guard, o.max_bad_steps);
	guard_install_stop_signals();
	int stopped_at = 0, exit_status = 0;
	for (int step = (int)start_step + 1; step <= last_step; step++) {
		double t0 = now_ms(), wait_ms = 0.0, loss_sum = 0.0;
		if (gpu)
			gpt2_cuda_zero_grad(gpu);
		else
			gpt2_zero_grad(m);
		for (int micro = 0; micro < accum; micro++) {
			struct loader_batch b;
			int rc = loader_next_batch(train_loader, &b);
			if (rc < 0)
				die_loader("training data", train_loader, rc);
			wait_ms += b.wait_ms;
			check_batch(train_loader, &b, nr_tokens, mc.vocab_size, "training data");
			if (o.verbose && micro == 0)
				fprintf(stderr, "rank %d step %d: batch epoch %llu position %llu fnv %016llx\n",
					comm.rank, step, (unsigned long long)b.state.epoch,
					(unsigned long long)b.state.position,
					(unsigned long long)fnv1a_bytes(b.inputs, nr_tokens * 4));
			if (gpu) {
				gpt2_cuda_micro_step(gpu, &b, loss_scale);
				continue;
			}
			gpt2_forward(m, b.inputs, b.targets);
			gpt2_backward(m, b.inputs, b.targets, loss_scale);
			loss_sum += m->mean_loss;
		}
		int bad;
		float loss, norm, lr = lr_schedule(s.lr, step - 1, s.warmup, s.steps, s.lr_final_frac);
		if (gpu) {
			/* the reduction, norm, clipping and AdamW stay on the GPU; the loss is read */
			gpt2_cuda_update(gpu, &comm, &opt, lr, s.grad_clip, step);
			loss = gpt2_cuda_step_result(gpu, accum, &norm);
			comm_allreduce_mean(&comm, &loss, 1);
			/* counted, but the GPU has applied the update already: the weights it spoils
			 * are never checkpointed (ckpt_save refuses them) */
			bad = guard_step_is_bad(&guard, loss, norm);
		} else {
			comm_allreduce_mean(&comm, m->grads_memory, m->nr_params);
			loss = (float)(loss_sum / accum);
			comm_allreduce_mean(&comm, &loss, 1);
			norm = gpt2_grad_norm(m);
			bad = guard_step_is_bad(&guard, loss, norm);
			float clip = s.grad_clip > 0.0f && norm > s.grad_clip ? s.grad_clip / norm : 1.0f;
			if (!bad)
				gpt2_update(m, &opt, lr, clip, step);
		}
		double ms = now_ms() - t0;
		double tokens_per_s = (double)s.total_batch_tokens / (ms / 1e3);

		float val_loss = NAN;
		int evaluate_now = s.eval_every > 0 && (step % s.eval_every == 0 || step == s.steps);
		if (evaluate_now && val_loader)
			val_loss = evaluate(m, val_loader, s.val_batches, mc.vocab_size);
		if (comm.rank == 0) {
			printf("step %6d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s | "
			       "wait %.2f ms",
				step, s.steps, loss, lr, norm, ms, tokens_per_s, wait_ms);
			if (!isnan(val_loss))
				printf(" | val %.6f", val_loss);
			if (bad)
				printf(" | skipped: non-finite loss or norm (%d in a row, %lld in all)",
					guard.bad_in_row, guard.nr_skipped);
			printf("\n");
			fprintf(log, "%d,%.9g,%.9g,%.9g,%.3f,%.1f,%.3f,", step, loss, lr, norm, ms,
				tokens_per_s, wait_ms);
			if (!isnan(val_loss))
				fprintf(log, "%.9g", val_loss);
			fprintf(log, "\n");
			fflush(log);
			if (nr_points == cap) {
				cap = cap ? cap * 2 : 1024;
				points = realloc(points, cap * sizeof(*points));
				if (!points)
					die("out of memory");
			}
			points[nr_points++] = (struct loss_point){ step, loss, val_loss };
			if (evaluate_now && gen) {
				if (gpu)
					gpt2_cuda_store(gpu, m);
				sample(gen, s.sample, &rng, mc.max_seq_len);
			}
			if (evaluate_now || step == last_step)
				report_write_svg(svg_path, points, nr_points, "ferry train: loss");
		}
		/* a skipped step changed nothing worth a checkpoint that rotates out an older one */
		int checkpoint_now = (s.ckpt_every > 0 && step % s.ckpt_every == 0 && !bad) ||
			step == last_step;
		if (checkpoint_now)
			write_checkpoint(o.out, s.keep, step, rng, settings_text, train_loader, m, log,
				log_path);
		/* the stop hook: a signal on any rank stops every rank after this same step */
		if (guard_stop_agreed(&comm) && step < last_step) {
			if (!checkpoint_now)
				write_checkpoint(o.out, s.keep, step, rng, settings_text, train_loader, m,
					log, log_path);
			stopped_at = step;
			break;
		}
		/* the give-up hook: the same decision on every rank (loss and norm are) */
		if (guard_should_give_up(&guard)) {
			if (comm.rank == 0)
				fprintf(stderr, "ferry train: %d steps in a row had a non-finite loss or "
						"gradient norm (step %d: loss %g, norm %g); stopping, the last "
						"checkpoint is the newest in %s\n",
					guard.bad_in_row, step, loss, norm, o.out);
			exit_status = 1;
			break;
		}
	}
	if (stopped_at) {
		if (comm.rank == 0) {
			report_write_svg(svg_path, points, nr_points, "ferry train: loss");
			printf("ferry train: stopped by %s after step %d with a checkpoint; continue "
			       "with ferry train --resume %s\n",
				guard_signal_name(guard_stop_signal()), stopped_at, o.out);
		}
		exit_status = GUARD_EXIT_STOPPED;
	}
	if (comm.rank == 0 && exit_status == 0) {
		printf("ferry train: done at step %d; log %s, plot %s\n", last_step, log_path,
			svg_path);
	}
	if (comm.rank == 0) {
		fclose(log);
		if (m->profile && exit_status == 0)
			print_profile(m, last_step - (int)start_step);
	}
	free(points);
	free(settings_text);
	ckpt_state_done(&resume_state);
	gpt2_free(gen);
	gpt2_cuda_free(gpu);
	gpt2_free(m);
	loader_free(train_loader);
	loader_free(val_loader);
	comm_done(&comm);
	return exit_status;
}
