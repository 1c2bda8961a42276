/* train/: the settings of `ferry train` (settings.c): what a run saves in every checkpoint, what
 * one process of it is told besides, and the command line that gives both. Private to train/:
 * train_cmd.c is its only user. Errors come back as -EINVAL with one line in err; the trainer
 * prints it and ends every rank. */
#ifndef FERRY_TRAIN_SETTINGS_H
#define FERRY_TRAIN_SETTINGS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct ckpt_state;

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
	int steps_given;   /* --steps was given: with --resume it raises the saved steps */
	/* --zero-stage: 0 every rank keeps the whole optimizer state, 1 each its slice, 2 also
	 * receives only its slice of the gradients (zero.h). Not a saved setting: a run resumes
	 * at any stage. */
	int zero_stage;
	/* --overlap off (1): the gradients all-reduced in one collective after backward, the
	 * simple twin of the buckets reduced during it (zero.h); --bucket-kib: their size. Not
	 * saved: the results are the same bits on 2 ranks either way. */
	int overlap;
	int bucket_kib;
	/* --pipeline-parallel: stages the layers are split into (pp.h); 1: none. Not saved: a
	 * run resumes on any layout. */
	int pipeline_parallel;
};

/* settings_parse_args' answer to --help: print settings_usage and end with status 0. */
#define SETTINGS_HELP 1

/* Fills s and o from argv (defaults for what is not given) and checks what the command line
 * alone can tell: values in range, no stray argument, and with --resume only the options a
 * resumed run may take. 0, SETTINGS_HELP, or -EINVAL with the line in err. */
int settings_parse_args(int argc, char **argv, struct train_settings *s, struct train_opts *o,
	char *err, size_t errlen);
void settings_usage(FILE *f);

/* The settings as the text a checkpoint keeps ("key value" lines), malloc'd; NULL when out of
 * memory. settings_parse reads it back; every key must be there. */
char *settings_format(const struct train_settings *s);
int settings_parse(struct train_settings *s, const char *text, char *err, size_t errlen);

/* The loader order settings of o (block bytes, window blocks): a new run (saved NULL) takes
 * the options, else FERRY_LOADER_BLOCK_BYTES / FERRY_LOADER_WINDOW_BLOCKS, else the loader's
 * defaults; a resumed run takes what its checkpoint saved, and refuses an environment that says
 * otherwise (it would silently be another order). A checkpoint of state version 1 saved none:
 * it resumes with the environment or the defaults, as then. */
int settings_order(struct train_opts *o, const struct ckpt_state *saved, char *err, size_t errlen);

#endif
