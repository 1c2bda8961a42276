/* train/: the settings of `ferry train`: the table of saved settings (the text of every
 * checkpoint), the table of command-line options, and the checks of both. The trainer
 * (train_cmd.c) gets filled structs or one line saying what is wrong. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader.h"
#include "train/ckpt.h"
#include "train/guard.h"
#include "train/settings.h"

/* ---- values ---- */

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

static int parse_ull(const char *s, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
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

/* A path fits a settings line: under PATH_MAX, one line. */
static int parse_path(const char *s, char *out)
{
	if (strlen(s) >= PATH_MAX || strchr(s, '\n'))
		return -EINVAL;
	strcpy(out, s);
	return 0;
}

/* ---- the saved settings ---- */

enum setting_type { S_STR, S_INT, S_LL, S_ULL, S_FLOAT };

/* since: 0 for the keys every saved settings text has; else the default of one written before
 * the key was (parsed as that value when missing) */
static const struct setting {
	const char *key;
	enum setting_type type;
	size_t offset;
	int since_default;
} settings_table[] = {
/* clang-format 14 would split the braced initializer of these macros over four lines. */
/* clang-format off */
#define ST(key, type) { #key, type, offsetof(struct train_settings, key), 0 }
#define ST_NEW(key, type, def) { #key, type, offsetof(struct train_settings, key), def }
	/* clang-format on */
	ST(data, S_STR),
	ST(val, S_STR),
	ST(init, S_STR),
	ST(layers, S_INT),
	ST(heads, S_INT),
	ST(dim, S_INT),
	ST(max_seq_len, S_INT),
	ST(vocab, S_INT),
	ST(seq_len, S_INT),
	ST(batch, S_INT),
	ST(total_batch_tokens, S_LL),
	ST(steps, S_INT),
	ST(warmup, S_INT),
	ST(lr, S_FLOAT),
	ST(lr_final_frac, S_FLOAT),
	ST(weight_decay, S_FLOAT),
	ST(grad_clip, S_FLOAT),
	ST(beta1, S_FLOAT),
	ST(beta2, S_FLOAT),
	ST(eps, S_FLOAT),
	ST(seed, S_ULL),
	ST(eval_every, S_INT),
	ST(val_batches, S_INT),
	ST(ckpt_every, S_INT),
	ST(keep, S_INT),
	ST(sample, S_INT),
	ST(world_size, S_INT),
	ST_NEW(tensor_parallel, S_INT, 1),
	ST_NEW(pipeline_parallel, S_INT, 1),
#undef ST
#undef ST_NEW
};
#define NR_SETTINGS (sizeof(settings_table) / sizeof(settings_table[0]))

char *settings_format(const struct train_settings *s)
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

static int setting_set(struct train_settings *s, const struct setting *e, const char *value)
{
	char *p = (char *)s + e->offset;
	long long v;
	switch (e->type) {
	case S_STR:
		return parse_path(value, p);
	case S_INT:
		if (parse_ll(value, INT_MIN, INT_MAX, &v) < 0)
			return -EINVAL;
		*(int *)p = (int)v;
		return 0;
	case S_LL:
		return parse_ll(value, LLONG_MIN, LLONG_MAX, (long long *)p);
	case S_ULL:
		return parse_ull(value, (unsigned long long *)p);
	case S_FLOAT:
		return parse_float(value, (float *)p);
	}
	return -EINVAL;
}

int settings_parse(struct train_settings *s, const char *text, char *err, size_t errlen)
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
		if (!space || i == NR_SETTINGS ||
			setting_set(s, &settings_table[i], space + 1) < 0) {
			snprintf(err, errlen, "saved settings: bad line '%.60s'", buf);
			return -EINVAL;
		}
		seen[i] = 1;
		line += n + (nl ? 1 : 0);
	}
	for (size_t i = 0; i < NR_SETTINGS; i++) {
		if (!seen[i] && settings_table[i].since_default) {
			*(int *)((char *)s + settings_table[i].offset) =
				settings_table[i].since_default;
			continue;
		}
		if (!seen[i]) {
			snprintf(err, errlen, "saved settings: '%s' missing",
				settings_table[i].key);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- the command line ---- */

void settings_usage(FILE *f)
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
		"  --loader-window-blocks N  blocks per window (default 8; every rank reads it;\n"
		"                       FERRY_LOADER_WINDOW_BLOCKS when not given); both change\n"
		"                       the order like --seed and are saved in checkpoints\n"
		"  --batch B            sequences per micro-batch per rank (default 8)\n"
		"  --total-batch-tokens N  tokens per optimizer step over all ranks; gradients\n"
		"                       are accumulated to reach it (default B*T*ranks); the\n"
		"                       samples of a step depend on it, not on the ranks\n"
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
		"                       verifies, with its saved settings; only --steps may be raised;\n"
		"                       on any number of ranks that divides the step's samples\n"
		"  --stop-at N          stop after step N with a checkpoint (to resume later)\n"
		"  --max-bad-steps N    a step whose loss or gradient norm is NaN or infinite is\n"
		"                       skipped (weights and moments unchanged); N such steps in\n"
		"                       a row end the run with exit status 1 (default 5; 0: never)\n"
		"  --verbose            per-rank details on stderr\n"
		"  --device cpu|cuda    where to train (default cpu); cuda: one GPU per process\n"
		"  --precision bf16|fp32  GPU weights, activations and matmuls (default bf16;\n"
		"                       master weights, moments and gradients are fp32 always)\n"
		"  --cuda-graph         replay each GPU step from a CUDA graph\n"
		"  --zero-stage 0|1|2   1 shards the optimizer state over the ranks,\n"
		"                       2 also reduce-scatters the gradients (default 0: every\n"
		"                       rank keeps everything); a run resumes at any stage\n"
		"  --overlap off|on     all-reduce the gradients in one collective\n"
		"                       after backward (default off), or in buckets while it\n"
		"                       runs (on; stages 0 and 1; no gain measured on one node)\n"
		"  --bucket-kib N       gradient bytes per bucket, in KiB (default 25600: 25 MiB)\n"
		"  --comm-timeout SEC   GPU ranks: an NCCL collective not done after SEC seconds\n"
		"                       ends the rank with exit status 1 (default 300)\n"
		"  --tensor-parallel T  split each block's matmuls over T ranks (Megatron; T\n"
		"                       divides the heads; CPU ranks; default 1)\n"
		"  --pipeline-parallel P  split the layers into P stages (default 1); the ranks\n"
		"                       are data x T x P, a run resumes on any layout\n"
		"  --help\n"
		"SIGTERM, SIGINT or SIGUSR1 stop the run after the current step with a checkpoint\n"
		"and exit status 75 (resume with --resume DIR); a second signal ends it at once.\n");
}

/* What the command line fills: the run's settings, this process's options, and the model's
 * shape as given (0: take it from --model dN). */
struct cmdline {
	struct train_settings s;
	struct train_opts o;
	int layers, heads, dim, model_n;
};

enum arg_kind {
	A_PATH,   /* a path, into char[PATH_MAX] */
	A_INT,    /* an int in [lo, hi] */
	A_U32,    /* the same, into a uint32_t */
	A_TOKENS, /* a long long in [lo, hi], "a positive integer" */
	A_SEED,   /* an unsigned long long */
	A_FLOAT,  /* a finite float in [lo, hi] */
	A_MODEL,  /* dN: N an int in [lo, hi] */
	A_CHOICE, /* one of choices[]: its index, into an int */
	A_FLAG,   /* no value: the int becomes 1 */
	A_HELP,
};

/* The options, in the order in which --resume names the first one it refuses. */
static const struct arg {
	const char *name;
	enum arg_kind kind;
	size_t offset; /* of the field in struct cmdline */
	double lo, hi;
	const char *choices[2];
	bool with_resume; /* a resumed run may take it */
} args_table[] = {
#define S(f) offsetof(struct cmdline, s.f)
#define O(f) offsetof(struct cmdline, o.f)
#define C(f) offsetof(struct cmdline, f)
/* clang-format off */
#define ARG(n, k, off, l, h, r) \
	{ .name = n, .kind = A_##k, .offset = off, .lo = l, .hi = h, .with_resume = r }
#define CHOICE(n, off, c0, c1) \
	{ .name = n, .kind = A_CHOICE, .offset = off, .choices = { c0, c1 }, .with_resume = true }
	/* clang-format on */
	ARG("data", PATH, S(data), 0, 0, false),
	ARG("val", PATH, S(val), 0, 0, false),
	ARG("model", MODEL, C(model_n), 1, 1024, false),
	ARG("layers", INT, C(layers), 1, 1024, false),
	ARG("heads", INT, C(heads), 1, 1024, false),
	ARG("dim", INT, C(dim), 1, 65536, false),
	ARG("init", PATH, S(init), 0, 0, false),
	ARG("vocab", INT, S(vocab), 1, 1 << 24, false),
	ARG("seq-len", INT, S(seq_len), 1, 1 << 16, false),
	ARG("batch", INT, S(batch), 1, 1 << 16, false),
	ARG("total-batch-tokens", TOKENS, S(total_batch_tokens), 1, 1LL << 40, false),
	ARG("steps", INT, S(steps), 1, INT_MAX, true),
	ARG("lr", FLOAT, S(lr), 0.0f, 10.0f, false),
	ARG("warmup", INT, S(warmup), 0, INT_MAX, false),
	ARG("lr-final-frac", FLOAT, S(lr_final_frac), 0.0f, 1.0f, false),
	ARG("weight-decay", FLOAT, S(weight_decay), 0.0f, 10.0f, false),
	ARG("grad-clip", FLOAT, S(grad_clip), 0.0f, 1e9f, false),
	ARG("seed", SEED, S(seed), 0, 0, false),
	ARG("out", PATH, O(out), 0, 0, false),
	ARG("eval-every", INT, S(eval_every), 0, INT_MAX, false),
	ARG("val-batches", INT, S(val_batches), 1, INT_MAX, false),
	ARG("ckpt-every", INT, S(ckpt_every), 0, INT_MAX, false),
	ARG("keep", INT, S(keep), 1, 1 << 20, false),
	ARG("sample", INT, S(sample), 0, 1 << 20, false),
	ARG("threads", INT, O(threads), 1, 4096, true),
	ARG("resume", PATH, O(resume), 0, 0, true),
	ARG("stop-at", INT, O(stop_at), 1, INT_MAX, true),
	ARG("verbose", FLAG, O(verbose), 0, 0, true),
	ARG("help", HELP, 0, 0, 0, true),
	CHOICE("device", O(cuda), "cpu", "cuda"),
	CHOICE("precision", O(fp32), "bf16", "fp32"),
	ARG("cuda-graph", FLAG, O(cuda_graph), 0, 0, true),
	ARG("loader-block-bytes", U32, O(block_bytes), 1, LOADER_MAX_BLOCK_BYTES, false),
	ARG("loader-window-blocks", U32, O(window_blocks), 1, LOADER_MAX_WINDOW_BLOCKS, false),
	ARG("max-bad-steps", INT, O(max_bad_steps), 0, INT_MAX, true),
	ARG("zero-stage", INT, O(zero_stage), 0, 2, true),
	CHOICE("overlap", O(overlap), "off", "on"),
	ARG("bucket-kib", INT, O(bucket_kib), 1, 1 << 22, true),
	ARG("comm-timeout", INT, O(comm_timeout_s), 1, 86400, true),
	ARG("tensor-parallel", INT, S(tensor_parallel), 1, 1024, true),
	ARG("pipeline-parallel", INT, S(pipeline_parallel), 1, 1024, true),
#undef ARG
#undef CHOICE
#undef S
#undef O
#undef C
};
#define NR_ARGS (sizeof(args_table) / sizeof(args_table[0]))
/* getopt_long's code of args_table[i]: above every character */
#define ARG_CODE 256

static void defaults(struct cmdline *c)
{
	memset(c, 0, sizeof(*c));
	c->s = (struct train_settings){ .layers = 6,
		.heads = 6,
		.dim = 384,
		.seq_len = 256,
		.batch = 8,
		.steps = 1000,
		.warmup = 100,
		.lr = 6e-4f,
		.lr_final_frac = 0.1f,
		.weight_decay = 0.1f,
		.grad_clip = 1.0f,
		.beta1 = 0.9f,
		.beta2 = 0.95f,
		.eps = 1e-8f,
		.seed = 1,
		.eval_every = 100,
		.val_batches = 20,
		.ckpt_every = 500,
		.keep = 3,
		.tensor_parallel = 1,
		.pipeline_parallel = 1 };
	c->o.max_bad_steps = GUARD_DEFAULT_MAX_BAD_STEPS;
	c->o.bucket_kib = 25600; /* DDP's 25 MiB */
	c->o.comm_timeout_s = 300;
	c->model_n = 6;
}

/* An int in [lo, hi] into p (a uint32_t for A_U32). */
static int set_int(const struct arg *a, const char *value, char *p, char *err, size_t errlen)
{
	long long v;
	if (parse_ll(value, (long long)a->lo, (long long)a->hi, &v) < 0) {
		snprintf(err, errlen, "--%s: '%s' is not an integer in [%lld, %lld]", a->name,
			value, (long long)a->lo, (long long)a->hi);
		return -EINVAL;
	}
	if (a->kind == A_U32)
		*(uint32_t *)p = (uint32_t)v;
	else
		*(int *)p = (int)v;
	return 0;
}

/* Stores value into a's field of c: 0, SETTINGS_HELP, or -EINVAL with the line naming the
 * option. */
static int arg_set(struct cmdline *c, const struct arg *a, const char *value, char *err,
	size_t errlen)
{
	char *p = (char *)c + a->offset;
	switch (a->kind) {
	case A_PATH:
		if (parse_path(value, p) < 0)
			goto bad_path;
		return 0;
	case A_MODEL:
		if (value[0] != 'd') {
			snprintf(err, errlen, "--%s: '%s' is not dN (d6, d12, d24 ...)", a->name,
				value);
			return -EINVAL;
		}
		return set_int(a, value + 1, p, err, errlen);
	case A_INT:
	case A_U32:
		return set_int(a, value, p, err, errlen);
	case A_TOKENS:
		if (parse_ll(value, (long long)a->lo, (long long)a->hi, (long long *)p) < 0) {
			snprintf(err, errlen, "--%s: '%s' is not a positive integer", a->name,
				value);
			return -EINVAL;
		}
		return 0;
	case A_SEED:
		if (parse_ull(value, (unsigned long long *)p) < 0) {
			snprintf(err, errlen, "--%s: '%s' is not a non-negative integer", a->name,
				value);
			return -EINVAL;
		}
		return 0;
	case A_FLOAT: {
		float f;
		if (parse_float(value, &f) < 0 || f < a->lo || f > a->hi) {
			snprintf(err, errlen, "--%s: '%s' is not a number in [%g, %g]", a->name,
				value, a->lo, a->hi);
			return -EINVAL;
		}
		*(float *)p = f;
		return 0;
	}
	case A_CHOICE:
		for (int i = 0; i < 2; i++)
			if (strcmp(value, a->choices[i]) == 0) {
				*(int *)p = i;
				return 0;
			}
		snprintf(err, errlen, "--%s: '%s' is not %s or %s", a->name, value, a->choices[0],
			a->choices[1]);
		return -EINVAL;
	case A_FLAG:
		*(int *)p = 1;
		return 0;
	case A_HELP:
		return SETTINGS_HELP;
	}
bad_path:
	snprintf(err, errlen, "--%s: path too long or holds a newline", a->name);
	return -EINVAL;
}

/* --resume takes the run's saved settings: the first option given (in the table's order) that
 * a resumed run may not take is refused. */
static int check_resume_args(const bool given[NR_ARGS], char *err, size_t errlen)
{
	for (size_t i = 0; i < NR_ARGS; i++) {
		if (!given[i] || args_table[i].with_resume)
			continue;
		if (strcmp(args_table[i].name, "out") == 0)
			snprintf(err, errlen,
				"--resume writes into the run's own directory; drop --out");
		else
			snprintf(err, errlen,
				"--resume takes the run's saved settings; only --steps "
				"(raised), --threads, --stop-at, --max-bad-steps, --zero-stage, "
				"--overlap, --bucket-kib, --comm-timeout, --tensor-parallel, --pipeline-parallel, "
				"the device options and --verbose may be given");
		return -EINVAL;
	}
	return 0;
}

int settings_parse_args(int argc, char **argv, struct train_settings *s, struct train_opts *o,
	char *err, size_t errlen)
{
	struct option long_options[NR_ARGS + 1] = { { 0 } };
	bool given[NR_ARGS] = { false };
	struct cmdline c;
	int rc = 0;

	for (size_t i = 0; i < NR_ARGS; i++) {
		const struct arg *a = &args_table[i];
		long_options[i] = (struct option){ a->name,
			a->kind == A_FLAG || a->kind == A_HELP ? no_argument : required_argument, 0,
			ARG_CODE + (int)i };
	}
	defaults(&c);
	optind = 1;
	opterr = 0;
	for (;;) {
		int code = getopt_long(argc, argv, "", long_options, NULL);
		if (code == -1)
			break;
		if (code < ARG_CODE) { /* '?' or ':' */
			const char *bad = argv[optind - 1];
			snprintf(err, errlen, "unknown option or missing value: '%s' (see --help)",
				bad ? bad : "");
			return -EINVAL;
		}
		const struct arg *a = &args_table[code - ARG_CODE];
		given[code - ARG_CODE] = true;
		c.o.steps_given |= strcmp(a->name, "steps") == 0;
		rc = arg_set(&c, a, optarg, err, errlen);
		if (rc != 0)
			return rc;
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
		return -EINVAL;
	}
	c.s.layers = c.layers ? c.layers : c.model_n;
	c.s.heads = c.heads ? c.heads : c.model_n;
	c.s.dim = c.dim ? c.dim : 64 * c.model_n;
	if (c.o.resume[0] && (rc = check_resume_args(given, err, errlen)) < 0)
		return rc;
	*s = c.s;
	*o = c.o;
	return 0;
}

/* An order setting from the environment (the knobs before they were options): 0 when unset,
 * else the value, checked as the option is. */
static int env_order(const char *name, uint32_t max, uint32_t *out, char *err, size_t errlen)
{
	const char *v = getenv(name);
	long long n;
	*out = 0;
	if (!v || !*v)
		return 0;
	if (parse_ll(v, 1, max, &n) < 0) {
		snprintf(err, errlen, "%s=%s: want an integer in [1, %u]", name, v, max);
		return -EINVAL;
	}
	*out = (uint32_t)n;
	return 0;
}

int settings_order(struct train_opts *o, const struct ckpt_state *saved, char *err, size_t errlen)
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
		uint32_t env;
		if (env_order(k[i].env, k[i].max, &env, err, errlen) < 0)
			return -EINVAL;
		if (from_ckpt[i]) {
			if (env && env != from_ckpt[i]) {
				snprintf(err, errlen,
					"--resume: %s=%u, but the run's loader order was saved "
					"with %s %u; unset it to resume",
					k[i].env, env, k[i].what, from_ckpt[i]);
				return -EINVAL;
			}
			*val[i] = from_ckpt[i];
		} else if (!*val[i]) {
			*val[i] = env ? env : k[i].def;
		}
	}
	return 0;
}
