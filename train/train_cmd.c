/* train/: `ferry train`, the CPU reference trainer: batches from the loader, forward and
 * backward (model.c), gradients averaged across ranks (comm.h), AdamW, evaluation, samples,
 * checkpoints and exact resume (ckpt.c), and the run's log.csv and loss.svg (report.c); with
 * --zero-stage the optimizer state (and gradients) sharded over the ranks (zero.c). The
 * command line and the saved settings are settings.c's. */
#include "config.h"

#include <errno.h>
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
#include "train/grid.h"
#include "train/guard.h"
#include "train/model.h"
#include "train/pp.h"
#include "train/report.h"
#include "train/settings.h"
#include "train/train.h"
#include "train/zero.h"

/* One run of `ferry train` in this process, from the command line to the last checkpoint.
 * Filled in the order of train_main: settings (setup), data, model (and resume), outputs; the
 * steps then change the model, rng, guard and the outputs. Rank 0 alone writes the run's files:
 * log, points and the checkpoints are its. */
struct trainer {
	struct comm comm; /* the world */
	/* the data × tensor × pipeline layout (grid.h): the loader, ZeRO and the loss average
	 * work in grid.data, the model's shards in grid.tensor */
	struct grid grid;
	struct train_settings s;
	struct train_opts o;
	/* --resume: the checkpoint the run continues from (state and settings), else zero */
	uint64_t start_step;
	struct ckpt_state resume_state;
	int resume_world;    /* the ranks of the run that wrote it (its settings say) */
	char *settings_text; /* settings_format(&s): saved in every checkpoint */

	/* data: every batch is (B, T) on this rank; accum micro-batches make a step */
	struct loader *train_loader, *val_loader; /* val_loader NULL without --val */
	int device;                               /* the GPU of this rank, -1 on the CPU */
	int B, T, accum;

	/* the model: with a GPU, m holds the weights and moments only (no activations) and gpu
	 * trains; without, gpu is NULL. gen is a view of m for --sample, else NULL. */
	struct gpt2_config mc;
	struct gpt2 *m, *gen;
	struct gpt2_cuda *gpu;
	struct zero zero; /* whose moments (and gradients) this rank keeps and updates */
	/* --pipeline-parallel P > 1: this rank's stage, which trains (m then holds the whole
	 * model's weights and moments for checkpoints, gathered on save); else NULL */
	struct pp *pp;
	double pp_wait_ms; /* the loader's wait in the step running, on a stage */
	struct adamw_config opt;
	float loss_scale; /* 1 / tokens of a step: the mean over the accumulated micro-batches */
	uint64_t rng;     /* initialisation, then sampling: saved in checkpoints */
	struct guard guard;
	int last_step; /* --stop-at, else steps */

	/* outputs (rank 0): log.csv, and the points of loss.svg */
	char log_path[PATH_MAX + 16], svg_path[PATH_MAX + 16];
	FILE *log;
	struct loss_point *points;
	size_t nr_points, cap;
};

/* What one optimizer step gave. */
struct step_result {
	float loss, norm, lr;
	double ms, wait_ms;
	struct zero_comm_stats comm; /* the gradients' reduction (CPU ranks) */
	uint64_t tensor_bytes;       /* the tensor group's payload this step (comm.h nr_bytes) */
	int bad; /* non-finite loss or norm: the weights were not updated (guard.h) */
};

/* One line on stderr (rank 0 only, unless every rank has something of its own to say) and
 * the whole job ends: a rank alone must not leave the others waiting in a collective. */
static void die(struct trainer *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
static void die(struct trainer *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ferry train: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	fflush(stdout);
	t->comm.ops->abort_all(&t->comm, 1);
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- checks of the run and its data ---- */

/* The model's shape from the settings and, with --init, from the file; checks it. */
static void model_config(struct trainer *t, struct gpt2_config *c)
{
	const struct train_settings *s = &t->s;
	char err[512];
	if (s->init[0]) {
		if (ckpt_read_model_config(s->init, c, err, sizeof(err)) < 0)
			die(t, "%s", err);
		if (c->vocab_size != s->vocab)
			die(t, "--init %s: vocabulary %d, the data's is %d", s->init, c->vocab_size,
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
		die(t, "--dim %d is not a multiple of --heads %d", c->channels, c->nr_heads);
	if (s->seq_len > c->max_seq_len)
		die(t, "--seq-len %d exceeds the model's %d positions", s->seq_len, c->max_seq_len);
}

/* Every token of the (B, T) batch in [0, V), else one line naming the shard and where in it
 * the token lies (inputs (j, t) are token t of row j's sample, targets token t + 1). */
static void check_batch(struct trainer *t, const struct loader *l, const struct loader_batch *b,
	const char *what)
{
	const int32_t *arrays[2] = { b->inputs, b->targets };
	const size_t n = (size_t)t->B * t->T;
	const int V = t->mc.vocab_size;
	for (int a = 0; a < 2; a++)
		for (size_t i = 0; i < n; i++) {
			if (arrays[a][i] >= 0 && arrays[a][i] < V)
				continue;
			const char *path;
			uint64_t index;
			loader_token_source(l, &b->state, (uint32_t)(i / t->T),
				(uint32_t)(i % t->T) + (uint32_t)a, &path, &index);
			die(t,
				"%s: %s: token %u (token %llu of the file) is not below the vocabulary "
				"size %d (--vocab)",
				what, path, (uint32_t)arrays[a][i], (unsigned long long)index, V);
		}
}

/* The next batch of l, checked; one the loader could not give ends the run with its one-line
 * reason, which names the shard (errno's text only when it has none). */
static void next_batch(struct trainer *t, struct loader *l, struct loader_batch *b,
	const char *what)
{
	int rc = loader_next_batch(l, b);
	if (rc < 0) {
		const char *why = loader_last_error(l);
		die(t, "%s: %s", what, why && why[0] ? why : strerror(-rc));
	}
	check_batch(t, l, b, what);
}

/* ---- the run directory ---- */

static void mkdir_p(struct trainer *t, const char *dir)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			die(t, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		die(t, "%s: %s", buf, strerror(errno));
}

/* Takes the run directory for this process: an exclusive flock on DIR/.ferry-train.lock, held
 * (the descriptor is never closed) until the process ends, however it ends, so a stale lock
 * file from a killed run blocks nothing. A second live run on DIR ends here with one line,
 * before it reads or writes anything of the first's. Rank 0 only: the run's files are its. */
static void lock_out_dir(struct trainer *t, const char *dir)
{
	char path[PATH_MAX + 32], pid[32] = "";
	snprintf(path, sizeof(path), "%s/.ferry-train.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		die(t, "%s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			die(t, "%s: flock: %s", path, strerror(errno));
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		die(t,
			"%s is in use by another ferry train run%s%s%s; wait for it to end or choose "
			"another directory",
			dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
	}
	/* The holder's pid, for the message above; only the holder writes it. */
	char line[32];
	int len = snprintf(line, sizeof(line), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)len, 0) != len)
		die(t, "%s: %s", path, strerror(errno));
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
		fprintf(sk->lines,
			"ferry train: --resume: skipping the checkpoint of step %llu: %s\n",
			(unsigned long long)step, reason);
}

/* The newest checkpoint of dir that verifies on every rank, each rank reading only what it will
 * load (ckpt_find_resumable_ranks), saying on stderr (rank 0) which newer ones were skipped and
 * why, one line each; none: the run ends with one line. */
static uint64_t find_resumable(struct trainer *t, const char *dir)
{
	struct skipped_ckpts sk = { 0 };
	char *text = NULL;
	size_t len = 0;
	uint64_t step;
	/* resume_model's slice: this rank's of the data group (grid.h's coordinates; the grid is
	 * not made yet), all of the moments under tensor or pipeline parallelism */
	int T = t->s.tensor_parallel, P = t->s.pipeline_parallel, D = t->comm.world_size / (T * P);
	struct ckpt_slice slice = { D, (t->comm.rank / T) % D, T * P > 1 ? 0 : t->o.zero_stage };
	sk.lines = open_memstream(&text, &len);
	int rc = ckpt_find_resumable_ranks(&t->comm, dir, &slice, &step, note_skipped, &sk);
	if (sk.lines)
		fclose(sk.lines);
	if (rc == -ENOENT)
		die(t, "--resume %s: no checkpoint there", dir);
	if (rc < 0)
		die(t, "--resume %s: none of its %d checkpoint(s) verifies; the newest (step %llu): %s",
			dir, sk.nr, (unsigned long long)sk.newest_step, sk.newest_reason);
	if (t->comm.rank == 0 && text)
		fputs(text, stderr);
	free(text);
	return step;
}

/* ---- ranks agree (train/agree.h): settings before anything is sized by them, then the data
 * and what it decides (the vocabulary) before the model is ---- */

/* Every rank ends here alike after the same comparison: each says its own value of the
 * setting that differs, and none aborts the others mid-sentence. */
static void agree_or_exit(struct trainer *t, struct agree *a)
{
	int i = agree_compare(a, &t->comm);
	if (i < 0)
		return;
	char line[512];
	agree_format(a, i, t->comm.rank, line, sizeof(line));
	fprintf(stderr, "ferry train: %s\n", line);
	fflush(stderr);
	fflush(stdout);
	comm_done(&t->comm);
	exit(1);
}

/* Each saved setting under its option's name (seq_len: --seq-len), and what else must match:
 * the order settings, where the run stops, the device and precision, and the checkpoint a
 * resumed run starts from. */
static void agree_on_settings(struct trainer *t)
{
	const struct train_opts *o = &t->o;
	struct agree a;
	char *text = settings_format(&t->s), name[64], value[64];
	if (!text)
		die(t, "out of memory");
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
	snprintf(value, sizeof(value), "%d", o->zero_stage);
	agree_add(&a, "--zero-stage", value);
	/* one rank's buckets against another's single collective would never meet */
	agree_add(&a, "--overlap", o->overlap ? "on" : "off");
	snprintf(value, sizeof(value), "%d", o->bucket_kib);
	agree_add(&a, "--bucket-kib", value);
	if (o->resume[0])
		snprintf(value, sizeof(value), "resumed at step %llu",
			(unsigned long long)t->start_step);
	else
		snprintf(value, sizeof(value), "a new run");
	agree_add(&a, "--resume (the checkpoint's step)", value);
	agree_or_exit(t, &a);
}

/* The identity of the data (paths, sizes, versions), the --init file's, and the vocabulary the
 * data decided: a rank whose files differ under the same --data would train another run. */
static void agree_on_data(struct trainer *t)
{
	const struct train_settings *s = &t->s;
	struct agree a;
	char err[PATH_MAX + 256], value[64];
	agree_init(&a);
	if (agree_add_dataset(&a, "--data", t->train_loader, err, sizeof(err)) < 0)
		die(t, "--data: %s", err);
	if (t->val_loader && agree_add_dataset(&a, "--val", t->val_loader, err, sizeof(err)) < 0)
		die(t, "--val: %s", err);
	if (s->init[0]) {
		struct stat sb;
		if (stat(s->init, &sb) < 0)
			die(t, "--init %s: %s", s->init, strerror(errno));
		int64_t id[3] = { (int64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec,
			(int64_t)sb.st_mtim.tv_nsec };
		snprintf(value, sizeof(value), "%lld bytes", (long long)sb.st_size);
		agree_add_hash(&a, "--init file (size or mtime)",
			agree_hash(AGREE_HASH_INIT, id, sizeof(id)), value);
	}
	snprintf(value, sizeof(value), "%d", s->vocab);
	agree_add(&a, "vocabulary (--vocab or the data's)", value);
	agree_or_exit(t, &a);
}

/* The vocabulary of a new run: what the shards declare, else --vocab, else the loader's guess
 * for the format (50257 for llm.c shards). A declared one is not overridden. */
static void choose_vocab(struct trainer *t)
{
	struct train_settings *s = &t->s;
	uint32_t declared = loader_declared_vocab(t->train_loader);
	if (s->vocab && declared && (uint32_t)s->vocab != declared)
		die(t, "--vocab %d, but the data declares %u (header[3] of %s)", s->vocab, declared,
			s->data);
	if (!s->vocab)
		s->vocab = (int)loader_vocab_size(t->train_loader);
	if (!s->vocab)
		die(t, "--data %s: the shards do not say their vocabulary size; give --vocab",
			s->data);
	uint32_t val_declared = t->val_loader ? loader_declared_vocab(t->val_loader) : 0;
	if (val_declared && val_declared != (uint32_t)s->vocab)
		die(t, "--val %s declares vocabulary %u, the training data's is %d", s->val,
			val_declared, s->vocab);
}

/* ---- setup ---- */

/* --resume DIR: the run's settings come from its newest checkpoint that verifies; only
 * --steps may raise them. */
static void resume_settings(struct trainer *t)
{
	char err[1024], path[PATH_MAX + 32];
	int steps = t->s.steps;
	int T = t->s.tensor_parallel, P = t->s.pipeline_parallel;
	if (t->comm.rank == 0)
		lock_out_dir(t, t->o.resume);
	t->start_step = find_resumable(t, t->o.resume);
	ckpt_paths(t->o.resume, t->start_step, NULL, path, sizeof(path));
	if (ckpt_load_state(t->o.resume, t->start_step, NULL, 0, 0, &t->resume_state, err,
		    sizeof(err)) < 0)
		die(t, "%s", err);
	if (settings_parse(&t->s, t->resume_state.settings, err, sizeof(err)) < 0)
		die(t, "%s: %s", path, err);
	if (t->o.steps_given) {
		if (steps < t->s.steps)
			die(t, "--steps %d: the run was set for %d; --steps may only be raised",
				steps, t->s.steps);
		t->s.steps = steps;
	}
	/* The order is the same for every world size and the checkpoint keeps a global
	 * position: another number of ranks continues the same samples (the micro-batches a step
	 * accumulates make up the difference, see open_data). */
	t->resume_world = t->s.world_size;
	t->s.world_size = t->comm.world_size;
	/* like the world size, the layout is this run's: the checkpoint is whole (ckpt.h) */
	t->s.tensor_parallel = T;
	t->s.pipeline_parallel = P;
	snprintf(t->o.out, sizeof(t->o.out), "%s", t->o.resume);
}

/* A new run: its directory made and taken, and holding no other run. */
static void new_run(struct trainer *t)
{
	uint64_t old;
	if (!t->s.data[0])
		die(t, "--data is required (see --help)");
	if (!t->o.out[0])
		die(t, "--out is required (see --help)");
	if (t->comm.rank == 0) {
		mkdir_p(t, t->o.out);
		lock_out_dir(t, t->o.out);
	}
	if (ckpt_latest(t->o.out, &old) == 0)
		die(t,
			"%s holds a run with checkpoints; continue it with --resume %s or choose "
			"another --out",
			t->o.out, t->o.out);
	t->s.world_size = t->comm.world_size;
}

/* Every rank calls it with the first layout error it found, or NULL. The ranks can find
 * differently (another command line on one rank, a model file only some can read): they agree
 * first, in one collective, so that none leaves the others waiting in theirs; then, if any
 * found one, the lowest such rank says it in one line and every rank ends with status 1 (no
 * MPI_Abort: it could kill the rank before its line is out). */
static void layout_agree(struct trainer *t, const char *err)
{
	int W = t->comm.world_size;
	uint64_t lowest = err ? (uint64_t)(W - t->comm.rank) : 0;
	t->comm.ops->allreduce_max_u64(&t->comm, &lowest, 1);
	if (!lowest)
		return;
	if (err && W - (int)lowest == t->comm.rank)
		fprintf(stderr, "ferry train: %s\n", err);
	fflush(stderr);
	fflush(stdout);
	comm_done(&t->comm);
	exit(1);
}

/* The first layout error of the command line against the world size (NULL: none), before
 * anything is read or written: T and P against the ranks, what the GPU trainer and a pipeline
 * do not combine with. */
static const char *layout_args_error(struct trainer *t, char *err, size_t errlen)
{
	const struct train_settings *s = &t->s;
	/* the GPU pipeline's stages send device buffers to each other: NCCL's sendrecv */
	if (t->o.cuda && s->pipeline_parallel > 1 && strcmp(t->comm.ops->name, "nccl") != 0) {
		snprintf(err, errlen,
			"--device cuda --pipeline-parallel needs GPU ranks that talk over NCCL (the "
			"stages send device buffers): this run's %d rank(s) talk over '%s'",
			t->comm.world_size, t->comm.ops->name);
		return err;
	}
	/* the GPU pipeline is built for whole stages with their whole optimizer state */
	if (t->o.cuda && s->pipeline_parallel > 1 && s->tensor_parallel > 1)
		return "--device cuda --pipeline-parallel with --tensor-parallel: GPU stages split "
		       "over a tensor group are not built (run it on CPU ranks)";
	if (t->o.cuda && s->pipeline_parallel > 1 && t->o.zero_stage > 0)
		return "--device cuda --pipeline-parallel with --zero-stage 1 or 2: a GPU stage's "
		       "sliced optimizer state is not built (use --zero-stage 0)";
	if (t->o.cuda && s->pipeline_parallel > 1 && t->o.cuda_graph)
		return "--device cuda --pipeline-parallel with --cuda-graph: a stage's micro-steps "
		       "wait on sends between them and are not captured";
	if (grid_check(t->comm.world_size, s->tensor_parallel, s->pipeline_parallel, 0, 0, err,
		    errlen) < 0 ||
		pp_check_layout(s->pipeline_parallel, t->o.overlap, 0, err, errlen) < 0)
		return err;
	return NULL;
}

static void check_layout_args(struct trainer *t)
{
	char err[512];
	layout_agree(t, layout_args_error(t, err, sizeof(err)));
}

/* The first error of the layout against the run's settings (a resumed run's are the
 * checkpoint's, --sample among them) and the model's heads and layers (--init's header, or a
 * resumed run's model file; a file that does not read is left to be reported where the model
 * is loaded). NULL: none. */
static const char *layout_model_error(struct trainer *t, char *err, size_t errlen)
{
	const struct train_settings *s = &t->s;
	struct gpt2_config c = { .nr_heads = s->heads, .nr_layers = s->layers };
	char path[PATH_MAX + 32];
	const char *file = s->init[0] ? s->init : NULL;
	if (s->tensor_parallel > 1 && s->sample)
		return "--sample draws on rank 0 alone and a tensor-parallel forward needs every "
		       "tensor rank: not with --tensor-parallel";
	if (pp_check_layout(s->pipeline_parallel, t->o.overlap, s->sample, err, errlen) < 0)
		return err;
	if (t->o.resume[0]) {
		ckpt_paths(t->o.resume, t->start_step, path, NULL, sizeof(path));
		file = path;
	}
	if (file && ckpt_read_model_config(file, &c, err, errlen) < 0)
		return NULL;
	if (grid_check(t->comm.world_size, s->tensor_parallel, s->pipeline_parallel, c.nr_heads,
		    c.nr_layers, err, errlen) < 0)
		return err;
	return NULL;
}

static void check_layout_model(struct trainer *t)
{
	char err[PATH_MAX + 256];
	layout_agree(t, layout_model_error(t, err, sizeof(err)));
}

/* The grid's groups (a collective), once the ranks agree on the layout; rank 0 prints it. */
static void make_grid(struct trainer *t)
{
	char err[512], line[256];
	if (grid_init(&t->grid, &t->comm, t->s.tensor_parallel, t->s.pipeline_parallel, err,
		    sizeof(err)) < 0)
		die(t, "%s", err);
	if (t->comm.rank == 0) {
		grid_describe(&t->grid, 0, line, sizeof(line));
		printf("ferry train: %s\n", line);
	}
}

/* The settings of the run, checked, and the same on every rank. SETTINGS_HELP for --help. */
static int setup(struct trainer *t, int argc, char **argv)
{
	char err[1024];
	int rc = settings_parse_args(argc, argv, &t->s, &t->o, err, sizeof(err));
	if (rc < 0)
		die(t, "%s", err);
	if (rc == SETTINGS_HELP)
		return rc;
#ifdef _OPENMP
	if (t->o.threads)
		omp_set_num_threads(t->o.threads);
#endif
	check_layout_args(t);
	if (t->o.resume[0]) {
		resume_settings(t);
		check_layout_model(t);
	} else {
		check_layout_model(t);
		new_run(t);
	}
	if (settings_order(&t->o, t->o.resume[0] ? &t->resume_state : NULL, err, sizeof(err)) < 0)
		die(t, "%s", err);
	if (t->o.cuda && gpt2_cuda_available(err, sizeof(err)) < 0)
		die(t, "%s", err);
	if (t->o.stop_at && t->o.stop_at > t->s.steps)
		die(t, "--stop-at %d is beyond --steps %d", t->o.stop_at, t->s.steps);
	if (t->o.stop_at && (uint64_t)t->o.stop_at <= t->start_step)
		die(t, "--stop-at %d: the run is already at step %llu", t->o.stop_at,
			(unsigned long long)t->start_step);
	agree_on_settings(t);
	make_grid(t);
	return 0;
}

/* The loaders, and what the data decides: the vocabulary of a new run, and the micro-batches
 * of a step. */
static void open_data(struct trainer *t)
{
	struct train_settings *s = &t->s;
	char err[1024];
	/* the data ranks: every tensor and pipeline rank of one data rank reads its samples */
	int W = t->grid.D;
	t->B = s->batch;
	t->T = s->seq_len;
	t->device = t->o.cuda ? gpt2_cuda_local_device() : -1;
	if (!t->o.resume[0] && !s->total_batch_tokens)
		s->total_batch_tokens = (long long)t->B * t->T * W;
	/* The global batch decides the samples of each step, whatever the layout: W ranks of B
	 * accumulating A micro-batches read what 1 rank of W*B*A does. */
	long long tokens_per_micro = (long long)t->B * t->T * W;
	if (s->total_batch_tokens % tokens_per_micro != 0) {
		if (t->o.resume[0])
			die(t,
				"--resume: the run's %lld tokens a step are not a multiple of "
				"batch*seq-len*data ranks = %lld on %d data rank(s)",
				s->total_batch_tokens, tokens_per_micro, W);
		die(t,
			"--total-batch-tokens %lld is not a multiple of batch*seq-len*data ranks = "
			"%lld (%d data rank(s))",
			s->total_batch_tokens, tokens_per_micro, W);
	}
	t->accum = (int)(s->total_batch_tokens / tokens_per_micro);
	struct loader_config lc = {
		.paths = s->data,
		.format = LOADER_FORMAT_AUTO,
		.batch = (uint32_t)t->B,
		.seq_len = (uint32_t)t->T,
		.seed = s->seed,
		.shuffle = true,
		.rank = (uint32_t)t->grid.d,
		.world_size = (uint32_t)W,
		.device = t->device,
		.verbose = t->o.verbose,
		.block_bytes = t->o.block_bytes,
		.window_blocks = t->o.window_blocks,
		.global_batch = (uint64_t)(s->total_batch_tokens / t->T),
	};
	if (loader_open(&t->train_loader, &lc, err, sizeof(err)) < 0)
		die(t, "--data %s: %s", s->data, err);
	if (s->val[0]) {
		struct loader_config vc = lc;
		vc.paths = s->val;
		vc.shuffle = false;
		vc.global_batch = 0;
		if (loader_open(&t->val_loader, &vc, err, sizeof(err)) < 0)
			die(t, "--val %s: %s", s->val, err);
		/* val_batches counts batches of one rank's order (evaluate): the D data ranks
		 * read D of them a step of their own order */
		uint64_t per_epoch = loader_steps_per_epoch(t->val_loader) * (uint64_t)W;
		if (per_epoch > 0 && (uint64_t)s->val_batches > per_epoch)
			s->val_batches = (int)per_epoch;
	}
	if (!t->o.resume[0]) {
		choose_vocab(t);
		s->max_seq_len = t->T;
	}
	agree_on_data(t);
}

/* The resumed run's weights, moments, RNG and data position, from its checkpoint, into whole
 * (t->m, or under tensor parallelism the whole model its shards are cut from: the weights'
 * shards are cut here, and the whole weights freed, before the moments are read). */
static void resume_model(struct trainer *t, struct gpt2 *whole)
{
	char err[1024], path[PATH_MAX + 32];
	ckpt_paths(t->o.resume, t->start_step, path, NULL, sizeof(path));
	if (ckpt_read_model(path, whole, err, sizeof(err)) < 0)
		die(t, "%s", err);
	if (whole != t->m) { /* tensor ranks: the weights' shards now, the whole weights freed
			      * before the state file's whole moments come in */
		ckpt_tp_scatter(t->m, whole->params_memory, t->m->params_memory);
		free(whole->params_memory);
		whole->params_memory = NULL;
		memset(&whole->params, 0, sizeof(whole->params));
	}
	/* only the moments this rank keeps (zero_init's slice of the data group), from whichever
	 * of the checkpoint's shards hold them, whatever world size and stage wrote it; a whole
	 * state file is read whole. Tensor ranks read all of them and keep their shards. */
	size_t lo = 0, hi = whole->nr_params;
	if (whole == t->m && t->grid.P == 1) /* a stage's slice is of its own part (pp_scatter) */
		zero_slice_bounds(t->m->nr_params, t->grid.D, t->grid.d, t->o.zero_stage, &lo, &hi);
	ckpt_state_done(&t->resume_state);
	if (ckpt_load_state(t->o.resume, t->start_step, whole, lo, hi, &t->resume_state, err,
		    sizeof(err)) < 0)
		die(t, "%s", err);
	t->rng = t->resume_state.rng;
	/* The checkpoint's global position (in samples) as this layout's batch count. A state
	 * file before version 3 kept the writer's batch count, in the order of that time: the
	 * same progress through the epoch, other samples. */
	uint64_t micro = (uint64_t)t->B * t->grid.D;
	uint64_t k = t->resume_state.loader_position;
	if (t->resume_state.version < 3)
		k *= (uint64_t)t->B * (uint64_t)t->resume_world;
	if (k % micro != 0)
		die(t,
			"--resume: the checkpoint is at sample %llu of epoch %llu, not a multiple of "
			"batch*ranks = %llu",
			(unsigned long long)k, (unsigned long long)t->resume_state.loader_epoch,
			(unsigned long long)micro);
	struct loader_state ls = { t->resume_state.loader_epoch, k / micro };
	if (loader_seek(t->train_loader, &ls) < 0)
		die(t, "--resume: the loader cannot seek to epoch %llu sample %llu",
			(unsigned long long)ls.epoch, (unsigned long long)k);
}

/* model.h's gpt2_tp all-reduce: the tensor group's */
static void tensor_allreduce(void *arg, float *buf, size_t n)
{
	struct comm *c = arg;
	c->ops->allreduce_sum(c, buf, n);
}

/* The model: its weights resumed, read from --init, or drawn; then on the GPU with one. Under
 * tensor parallelism all three go to a whole model first (weights, and moments on a resume:
 * gpt2_new_whole), which every rank cuts its shards from (the same draws as one rank's: the
 * same initial weights for any layout) and frees before the first step. */
static void build_model(struct trainer *t)
{
	char err[1024];
	struct gpt2_tp tp = { t->grid.T, t->grid.t, tensor_allreduce, t->grid.tensor };
	model_config(t, &t->mc);
	/* the host model holds only weights and moments (no activations for (B, T)) with a GPU
	 * (the rank's tensor shards); on a pipeline it is the whole model's weights and moments
	 * alone (gpt2_new_whole), which each stage takes its part of and frees (pp_trim_whole).
	 * A new run's moments are zeros: the whole model a rank cuts its part from holds none
	 * then. */
	bool whole_moments = t->o.resume[0];
	if (t->grid.P > 1)
		t->m = gpt2_new_whole(&t->mc, whole_moments);
	else
		t->m = gpt2_new_tp(&t->mc, t->o.cuda ? 1 : t->B, t->o.cuda ? 1 : t->T, &tp);
	if (!t->m)
		die(t, "cannot allocate the model (L %d, C %d, B %d, T %d): out of memory",
			t->mc.nr_layers, t->mc.channels, t->B, t->T);
	/* tensor ranks: the whole model for the moment it takes to cut the rank's shards */
	struct gpt2 *whole = t->m->tp.size > 1 ? gpt2_new_whole(&t->mc, whole_moments) : t->m;
	if (!whole)
		die(t, "out of memory");
	/* splitmix64 of the seed: nearby seeds give unrelated streams, and never the state 0 */
	uint64_t rng = t->s.seed + 0x9E3779B97F4A7C15ULL;
	rng = (rng ^ (rng >> 30)) * 0xBF58476D1CE4E5B9ULL;
	rng = (rng ^ (rng >> 27)) * 0x94D049BB133111EBULL;
	rng ^= rng >> 31;
	t->rng = rng ? rng : 1;
	if (t->o.resume[0]) {
		resume_model(t, whole);
	} else if (t->s.init[0]) {
		if (ckpt_read_model(t->s.init, whole, err, sizeof(err)) < 0)
			die(t, "%s", err);
	} else {
		gpt2_init_random(whole, &t->rng);
	}
	if (whole != t->m) {              /* a new run's moments stay the shards' zeros */
		if (whole->params_memory) /* resume_model cut them already */
			ckpt_tp_scatter(t->m, whole->params_memory, t->m->params_memory);
		if (whole->m_memory) {
			ckpt_tp_scatter(t->m, whole->m_memory, t->m->m_memory);
			ckpt_tp_scatter(t->m, whole->v_memory, t->m->v_memory);
		}
		gpt2_free(whole);
	}
	if (t->grid.P > 1) { /* the stage's part of the whole model (its tensor shards) */
		t->pp = calloc(1, sizeof(*t->pp));
		if (!t->pp || pp_init(t->pp, &t->grid, &tp, &t->mc, t->B, t->T, t->o.cuda, err,
				      sizeof(err)) < 0)
			die(t, "%s", t->pp ? err : "out of memory");
		pp_scatter(t->pp, t->m);
		pp_trim_whole(t->pp, t->m);
		/* every rank its own line: the layout at start */
		printf("ferry train: pipeline of %d stages: rank %d is stage %d, layers %d-%d, "
		       "%zu parameters\n",
			t->pp->nr_stages, t->comm.rank, t->pp->stage, t->pp->l0, t->pp->l1 - 1,
			t->pp->m->nr_params);
	}
	/* the whole moments read or zeroed above become this rank's slice (--zero-stage), of
	 * its stage's on a pipeline */
	if (zero_init(&t->zero, t->pp ? t->pp->m : t->m, t->grid.data, t->o.zero_stage, err,
		    sizeof(err)) < 0)
		die(t, "%s", err);
	zero_set_overlap(&t->zero, t->grid.data, t->o.overlap, (size_t)t->o.bucket_kib << 10);
	if (t->o.cuda) {
		struct gpt2_cuda_opts go = { t->device, !t->o.fp32, t->o.cuda_graph, &t->zero,
			&t->comm, t->grid.tensor, t->grid.data };
		/* a pipeline stage trains on the GPU through pp (its stage ops); t->gpu stays
		 * NULL, t->m the whole model's emptied struct */
		if (t->pp && pp_use_gpu(t->pp, &go, err, sizeof(err)) < 0)
			die(t, "%s", err);
		if (!t->pp && !(t->gpu = gpt2_cuda_new(t->m, t->B, t->T, &go, err, sizeof(err))))
			die(t, "%s", err);
	}
	t->gen = t->s.sample ? gpt2_new_view(t->m, 1, t->mc.max_seq_len) : NULL;
	if (t->s.sample && !t->gen)
		die(t, "out of memory");
}

/* A point of loss.svg. */
static void add_point(struct trainer *t, struct loss_point p)
{
	if (t->nr_points == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->points = realloc(t->points, t->cap * sizeof(*t->points));
		if (!t->points)
			die(t, "out of memory");
	}
	t->points[t->nr_points++] = p;
}

/* log.csv of a resumed run: the rows up to the checkpoint stay, later rows (from a part of the
 * run that went past its last checkpoint) go; the kept rows are the plot's first points. */
static void log_truncate(struct trainer *t)
{
	const char *path = t->log_path;
	FILE *f = fopen(path, "r");
	if (!f)
		die(t, "--resume: %s: %s", path, strerror(errno));
	char tmp[PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *out = fopen(tmp, "w");
	if (!out)
		die(t, "%s: %s", tmp, strerror(errno));
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
		if (sscanf(line, "%d,%f", &step, &loss) != 2 || step > (int)t->start_step)
			continue;
		fputs(line, out);
		/* the last field is val_loss, empty where not evaluated */
		char *comma = strrchr(line, ',');
		float val = NAN;
		if (comma && comma[1] != '\n' && comma[1] != '\0')
			val = strtof(comma + 1, NULL);
		add_point(t, (struct loss_point){ step, loss, val });
	}
	fclose(f);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 ||
		rename(tmp, path) != 0)
		die(t, "%s: %s", path, strerror(errno));
}

/* Rank 0's line of what a rank holds: its training state (the shards, the stage's part, the
 * ZeRO slice) and its activations on the CPU (the model's and their gradients, a pipeline
 * stage's extra sets). Not in it: at a checkpoint of a split model rank 0 holds one whole
 * array (ckpt_save_fetched) and a shard's or stage's buffer of the gather for a moment. */
static void print_memory(const struct trainer *t)
{
	struct zero_memory zm;
	double MiB = 1048576.0, acts = 0.0;
	const struct gpt2_cuda *gpu = t->gpu ? t->gpu : t->pp ? t->pp->gpu : NULL;
	if (gpu)
		gpt2_cuda_memory(gpu, &zm);
	else
		zero_memory(&t->zero, &zm);
	if (!gpu) {
		const struct gpt2 *m = t->pp ? t->pp->m : t->m;
		size_t n = 0;
		for (int i = 0; i < GPT2_NR_ACT_TENSORS; i++)
			n += m->act_sizes[i];
		acts = 2.0 * (double)n * sizeof(float);
		if (t->pp)
			acts += (double)(t->pp->nr_slots - 1) * t->pp->nr_act_floats *
				sizeof(float);
	}
	printf("ferry train: %smemory per rank: parameters %.3f MiB, gradients %.3f MiB, "
	       "optimizer state %.3f MiB (ZeRO stage %d over %d rank(s))",
		gpu ? "GPU " : "", zm.params / MiB, zm.grads / MiB, zm.optimizer / MiB,
		t->zero.stage, t->grid.D);
	if (!gpu)
		printf(", activations %.3f MiB", acts / MiB);
	printf("\n");
}

/* Rank 0: log.csv opened (a resumed run's cut back to its checkpoint) and the run's first
 * lines on stdout. */
static void open_outputs(struct trainer *t)
{
	const struct train_opts *o = &t->o;
	const struct gpt2_config *mc = &t->mc;
	snprintf(t->log_path, sizeof(t->log_path), "%s/log.csv", o->out);
	snprintf(t->svg_path, sizeof(t->svg_path), "%s/loss.svg", o->out);
	if (t->comm.rank != 0)
		return;
	mkdir_p(t, o->out);
	if (o->resume[0])
		log_truncate(t);
	t->log = fopen(t->log_path, o->resume[0] ? "a" : "w");
	if (!t->log)
		die(t, "%s: %s", t->log_path, strerror(errno));
	if (!o->resume[0])
		fprintf(t->log, "step,loss,lr,grad_norm,ms,tokens_per_s,data_wait_ms,val_loss\n");
	/* the whole model's parameters, whatever part of them this rank holds */
	size_t sizes[GPT2_NR_PARAM_TENSORS], nr_params = 0;
	gpt2_param_sizes(mc, sizes);
	for (int i = 0; i < GPT2_NR_PARAM_TENSORS; i++)
		nr_params += sizes[i];
	printf("ferry train: %s model L=%d NH=%d C=%d V=%d (%zu parameters), B=%d T=%d, "
	       "%d rank(s), %d micro-step(s) per step, %d thread(s), loader %s%s\n",
		o->resume[0] ? "resuming" : "new", mc->nr_layers, mc->nr_heads, mc->channels,
		mc->vocab_size, nr_params, t->B, t->T, t->comm.world_size, t->accum,
#ifdef _OPENMP
		omp_get_max_threads(),
#else
		1,
#endif
		loader_path_name(t->train_loader),
		!o->cuda  ? ""
		: o->fp32 ? ", cuda fp32"
			  : ", cuda bf16");
	print_memory(t);
	if (o->resume[0])
		printf("ferry train: continuing %s from step %llu to %d\n", o->out,
			(unsigned long long)t->start_step, t->s.steps);
}

/* What the steps need besides: the settings text of the checkpoints, the optimizer, where the
 * run stops, the profile, and the hooks of guard.h (the non-finite step guard and the stop
 * signals). */
static void prepare_steps(struct trainer *t)
{
	const struct train_settings *s = &t->s;
	t->settings_text = settings_format(s);
	if (!t->settings_text)
		die(t, "out of memory");
	t->opt = (struct adamw_config){ s->beta1, s->beta2, s->eps, s->weight_decay };
	t->loss_scale = 1.0f / ((float)t->B * t->T * t->accum);
	t->last_step = t->o.stop_at ? t->o.stop_at : s->steps;
	const char *prof_env = getenv("FERRY_TRAIN_PROFILE");
	t->m->profile = prof_env && prof_env[0] && strcmp(prof_env, "0") != 0;
	/* the GPU that runs the steps: the trainer's, or a pipeline stage's, timed into the
	 * stage's model whose table finish() prints */
	struct gpt2_cuda *gpu = t->gpu ? t->gpu : t->pp ? t->pp->gpu : NULL;
	struct gpt2 *timed = t->pp ? t->pp->m : t->m;
	if (t->m->profile && gpu && gpt2_cuda_profile(gpu, timed->prof_s) < 0) {
		fprintf(stderr,
			"ferry train: FERRY_TRAIN_PROFILE: not with --cuda-graph (a replayed "
			"graph has no events inside); profile without it\n");
		t->m->profile = 0;
	}
	guard_init(&t->guard, t->o.max_bad_steps);
	guard_install_stop_signals();
}

/* ---- a step ---- */

/* pp's next micro-batch: the loader's, checked, its wait counted in the step's */
static void pp_batch(void *arg, struct loader_batch *b)
{
	struct trainer *t = arg;
	next_batch(t, t->train_loader, b, "training data");
	t->pp_wait_ms += b->wait_ms;
}

/* train_step on a pipeline stage (pp.h): the step's micro-batches in the 1F1B schedule, the
 * whole model's norm, clipping, AdamW on the stage's part. */
static void pp_train_step(struct trainer *t, int step, struct step_result *r)
{
	const struct train_settings *s = &t->s;
	double t0 = now_ms();
	uint64_t tensor_bytes = t->grid.tensor->nr_bytes;
	t->pp_wait_ms = 0.0;
	t->pp->m->profile = t->m->profile; /* the stage's layers are the ones timed */
	r->loss = pp_forward_backward(t->pp, t->accum, pp_batch, t, t->loss_scale);
	r->wait_ms = t->pp_wait_ms;
	/* the same stage of each data rank's pipeline: its gradients (at ZeRO stage 2 its
	 * slice's) and the loss averaged, as the unsplit model's are */
	pp_reduce_grads(t->pp, &t->zero);
	r->comm = t->zero.stats;
	comm_allreduce_mean(t->grid.data, &r->loss, 1);
	r->lr = lr_schedule(s->lr, step - 1, s->warmup, s->steps, s->lr_final_frac);
	r->norm = pp_grad_norm(t->pp, &t->zero);
	r->bad = guard_step_is_bad(&t->guard, r->loss, r->norm);
	float clip = s->grad_clip > 0.0f && r->norm > s->grad_clip ? s->grad_clip / r->norm : 1.0f;
	if (!r->bad)
		pp_update(t->pp, &t->zero, &t->opt, r->lr, clip, r->norm, step);
	r->tensor_bytes = t->grid.tensor->nr_bytes - tensor_bytes;
	r->ms = now_ms() - t0;
}

/* One optimizer step: accum micro-batches forward and backward, the gradients averaged across
 * ranks, then clipping and AdamW unless the guard finds the step bad. */
static void train_step(struct trainer *t, int step, struct step_result *r)
{
	const struct train_settings *s = &t->s;
	struct gpt2 *m = t->m;
	double t0 = now_ms(), loss_sum = 0.0;
	struct comm *data = t->grid.data;
	uint64_t tensor_bytes = t->grid.tensor->nr_bytes;
	if (t->pp) {
		pp_train_step(t, step, r);
		return;
	}
	r->wait_ms = 0.0;
	memset(&r->comm, 0, sizeof(r->comm));
	if (t->gpu)
		gpt2_cuda_zero_grad(t->gpu);
	else
		gpt2_zero_grad(m);
	for (int micro = 0; micro < t->accum; micro++) {
		struct loader_batch b;
		next_batch(t, t->train_loader, &b, "training data");
		r->wait_ms += b.wait_ms;
		if (t->o.verbose && micro == 0)
			fprintf(stderr,
				"rank %d step %d: batch epoch %llu position %llu fnv %016llx\n",
				t->comm.rank, step, (unsigned long long)b.state.epoch,
				(unsigned long long)b.state.position,
				(unsigned long long)agree_hash(AGREE_HASH_INIT, b.inputs,
					(size_t)t->B * t->T * 4));
		if (t->gpu) {
			if (micro == t->accum - 1) /* --overlap: its backward starts buckets */
				gpt2_cuda_reduce_begin(t->gpu);
			gpt2_cuda_micro_step(t->gpu, &b, t->loss_scale);
			continue;
		}
		gpt2_forward(m, b.inputs, b.targets);
		/* the last micro-step's backward reduces; the others add up locally */
		if (micro == t->accum - 1)
			zero_reduce_begin(&t->zero, m, data);
		gpt2_backward(m, b.inputs, b.targets, t->loss_scale);
		loss_sum += m->mean_loss;
	}
	r->lr = lr_schedule(s->lr, step - 1, s->warmup, s->steps, s->lr_final_frac);
	if (t->gpu) {
		/* the reduction, norm, clipping and AdamW stay on the GPU; the loss is read */
		gpt2_cuda_update(t->gpu, data, &t->opt, r->lr, s->grad_clip, step);
		r->loss = gpt2_cuda_step_result(t->gpu, t->accum, &r->norm);
		gpt2_cuda_reduce_stats(t->gpu);
		r->comm = t->zero.stats;
		comm_allreduce_mean(data, &r->loss, 1);
		/* counted, but the GPU has applied the update already: the weights it spoils
		 * are never checkpointed (ckpt_save refuses them) */
		r->bad = guard_step_is_bad(&t->guard, r->loss, r->norm);
	} else {
		zero_reduce_grads(&t->zero, m, data);
		r->comm = t->zero.stats;
		r->loss = (float)(loss_sum / t->accum);
		/* the tensor ranks of a data rank have the same loss: the mean over the data
		 * group's */
		comm_allreduce_mean(data, &r->loss, 1);
		r->norm = zero_grad_norm(&t->zero, m, data);
		r->bad = guard_step_is_bad(&t->guard, r->loss, r->norm);
		float clip = s->grad_clip > 0.0f && r->norm > s->grad_clip ? s->grad_clip / r->norm
									   : 1.0f;
		if (!r->bad)
			zero_update(&t->zero, m, data, &t->opt, r->lr, clip, step);
	}
	r->tensor_bytes = t->grid.tensor->nr_bytes - tensor_bytes;
	r->ms = now_ms() - t0;
}

/* Mean validation loss over val_batches batches from the start of the validation set,
 * averaged across ranks. */
static float evaluate(struct trainer *t)
{
	struct loader_state start = { 0, 0 };
	if (loader_seek(t->val_loader, &start) < 0)
		die(t, "validation loader: seek failed");
	/* The first val_batches batches of the validation set's order, as one rank reads them:
	 * data rank d's p-th batch is batch p·D + d of that order (the sampler's rule), so it
	 * takes those with p·D + d < val_batches, and the mean is over all of them, whatever D. */
	int D = t->grid.D, mine = (t->s.val_batches - t->grid.d + D - 1) / D;
	double sum = 0.0;
	for (int i = 0; i < mine; i++) {
		struct loader_batch b;
		next_batch(t, t->val_loader, &b, "validation data");
		if (t->gpu) {
			sum += gpt2_cuda_eval(t->gpu, &b);
			continue;
		}
		if (t->pp) {
			sum += pp_eval_loss(t->pp, &b);
			continue;
		}
		gpt2_forward(t->m, b.inputs, b.targets);
		sum += t->m->mean_loss;
	}
	float total = (float)sum;
	t->grid.data->ops->allreduce_sum(t->grid.data, &total, 1);
	return total / (float)t->s.val_batches;
}

/* Prints --sample tokens drawn from the model (temperature 1), byte-level vocabularies as
 * text. */
static void sample(struct trainer *t)
{
	struct gpt2 *gen = t->gen;
	const struct gpt2_config *c = &gen->config;
	int V = c->vocab_size, Vp = c->padded_vocab_size, max_T = t->mc.max_seq_len;
	int32_t *tokens = calloc((size_t)max_T, sizeof(int32_t));
	if (!tokens)
		die(t, "out of memory");
	if (t->gpu)
		gpt2_cuda_store(t->gpu, t->m);
	/* a newline for bytes, GPT-2's <|endoftext|> otherwise */
	int len = 1;
	tokens[0] = V <= 256 ? (V > '\n' ? '\n' : 0) : (V > 50256 ? 50256 : 0);
	printf("sample: ");
	for (int i = 0; i < t->s.sample; i++) {
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
		double u = rng_uniform(&t->rng) * total, acc = 0.0;
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
			putchar(next == '\n' || next == '\t' || (next >= 32 && next < 127) ||
						next >= 128
					? next
					: '?');
		else
			printf("%d ", next);
	}
	printf("\n");
	fflush(stdout);
	free(tokens);
}

/* The step's line on stdout, its row of log.csv and its point of the plot (rank 0), with the
 * validation loss (every rank: a collective) and a sample when an evaluation is due. */
static void log_step(struct trainer *t, int step, const struct step_result *r)
{
	const struct train_settings *s = &t->s;
	float val_loss = NAN;
	int evaluate_now = s->eval_every > 0 && (step % s->eval_every == 0 || step == s->steps);
	if (evaluate_now && t->val_loader)
		val_loss = evaluate(t);
	if (t->comm.rank != 0)
		return;
	double tokens_per_s = (double)s->total_batch_tokens / (r->ms / 1e3);
	printf("step %6d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s | "
	       "wait %.2f ms",
		step, s->steps, r->loss, r->lr, r->norm, r->ms, tokens_per_s, r->wait_ms);
	/* On a ferry mount: batches after this one whose chunks the daemon is fetching or has. */
	struct loader_prefetch_info pi;
	loader_get_prefetch(t->train_loader, &pi);
	if (pi.on)
		printf(" | ahead %llu", (unsigned long long)pi.ahead);
	/* the reduction's time the step waited for, of the time it was in flight */
	if (!t->gpu && !t->pp && t->grid.D > 1)
		printf(" | comm %.2f of %.2f ms, %d bucket(s)", r->comm.exposed_ms,
			r->comm.inflight_ms, r->comm.nr_buckets);
	/* the payload of the tensor group's all-reduces (and the norm's) on this rank */
	if (t->grid.T > 1)
		printf(" | tensor comm %llu bytes", (unsigned long long)r->tensor_bytes);
	if (!isnan(val_loss))
		printf(" | val %.6f", val_loss);
	if (r->bad)
		printf(" | skipped: non-finite loss or norm (%d in a row, %lld in all)",
			t->guard.bad_in_row, t->guard.nr_skipped);
	printf("\n");
	fprintf(t->log, "%d,%.9g,%.9g,%.9g,%.3f,%.1f,%.3f,", step, r->loss, r->lr, r->norm, r->ms,
		tokens_per_s, r->wait_ms);
	if (!isnan(val_loss))
		fprintf(t->log, "%.9g", val_loss);
	fprintf(t->log, "\n");
	fflush(t->log);
	add_point(t, (struct loss_point){ step, r->loss, val_loss });
	if (evaluate_now && t->gen)
		sample(t);
	if (evaluate_now || step == t->last_step)
		report_write_svg(t->svg_path, t->points, t->nr_points, "ferry train: loss");
}

/* The state of the run after step, as the checkpoint keeps it. */
static struct ckpt_state checkpoint_state(struct trainer *t, int step)
{
	struct loader_state ls;
	loader_get_state(t->train_loader, &ls);
	struct ckpt_state st = { .step = (uint64_t)step,
		.rng = t->rng,
		.loader_epoch = ls.epoch,
		.loader_position = ls.position * (uint64_t)t->B * t->grid.D,
		.settings = t->settings_text };
	loader_get_order(t->train_loader, &st.loader_block_bytes, &st.loader_window_blocks);
	return st;
}

/* ZeRO 1 and 2: every rank writes the moments of its own slice (nothing gathered), rank 0 the
 * model and the manifest, and once every rank has said its shard is on disk (fsynced: the
 * all-gather of the shards' sizes and hashes is that barrier) the DONE marker that makes the
 * checkpoint complete. A run killed before DONE leaves a checkpoint --resume skips. */
static void checkpoint_sharded(struct trainer *t, int step)
{
	char err[PATH_MAX + 256];
	struct zero *z = &t->zero;
	int W = t->comm.world_size;
	if (t->gpu) /* the weights for rank 0's model file, the slice's moments into z */
		gpt2_cuda_store(t->gpu, t->m);
	if (t->comm.rank == 0 && ckpt_shard_begin(t->o.out, (uint64_t)step, err, sizeof(err)) < 0)
		die(t, "checkpoint: %s", err);
	comm_barrier(&t->comm);
	/* per rank: status, lo, hi, bytes, xxh3 as u64, moved as 10 floats' bytes */
	enum { WORDS = 5 };
	uint64_t *all = calloc((size_t)W * WORDS, sizeof(uint64_t)), *mine;
	if (!all)
		die(t, "checkpoint: out of memory");
	mine = all + (size_t)t->comm.rank * WORDS;
	struct ckpt_shard_info info;
	int rc = ckpt_write_shard(t->o.out, (uint64_t)step, t->comm.rank, W, z->nr_params, z->lo,
		z->hi, z->m, z->v, &info, err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "ferry train: checkpoint: rank %d: %s\n", t->comm.rank, err);
	uint64_t words[WORDS] = { rc < 0, info.lo, info.hi, info.bytes, info.xxh3 };
	memcpy(mine, words, sizeof(words));
	t->comm.ops->allgather(&t->comm, (float *)all, WORDS * sizeof(uint64_t) / sizeof(float));
	for (int r = 0; r < W; r++)
		if (all[(size_t)r * WORDS])
			die(t, "checkpoint of step %d: rank %d could not write its shard", step, r);
	if (t->comm.rank == 0) {
		struct ckpt_shard_info *shards = calloc((size_t)W, sizeof(*shards));
		if (!shards)
			die(t, "checkpoint: out of memory");
		for (int r = 0; r < W; r++) {
			const uint64_t *w = all + (size_t)r * WORDS;
			shards[r] = (struct ckpt_shard_info){ w[1], w[2], w[3], w[4] };
		}
		struct ckpt_state st = checkpoint_state(t, step);
		char model[PATH_MAX + 32];
		ckpt_paths(t->o.out, (uint64_t)step, model, NULL, sizeof(model));
		if (fsync(fileno(t->log)) < 0)
			die(t, "%s: %s", t->log_path, strerror(errno));
		if (ckpt_write_model(model, t->m, err, sizeof(err)) < 0 ||
			ckpt_write_manifest(t->o.out, &st, z->nr_params, z->stage, W, shards, err,
				sizeof(err)) < 0 ||
			ckpt_finish_sharded(t->o.out, (uint64_t)step, t->s.keep, err, sizeof(err)) <
				0)
			die(t, "checkpoint: %s", err);
		free(shards);
	}
	free(all);
	comm_barrier(&t->comm);
}

/* One of checkpoint_gathered's arrays (ckpt_array: m, v, params) into whole on the world's
 * rank 0 (NULL elsewhere): under ZeRO the moments' slices first onto data rank 0, then the
 * tensor shards of data rank 0 onto its tensor rank 0. Every rank calls it, in ckpt_array's
 * order. */
static int tp_fetch_array(void *arg, int what, float *whole, char *err, size_t errlen)
{
	struct trainer *t = arg;
	struct zero *z = &t->zero;
	struct gpt2 *m = t->m;
	const float *shard = what == CKPT_PARAMS          ? m->params_memory
			     : what == CKPT_FIRST_MOMENTS ? m->m_memory
							  : m->v_memory;
	float *own = NULL;
	int rc = 0;
	if (what != CKPT_PARAMS && z->stage > 0) {
		if (t->grid.d == 0 && !(own = malloc(z->slice * (size_t)t->grid.D * sizeof(float))))
			rc = -ENOMEM;
		if (rc == 0 && zero_gather_slices(z, t->grid.data,
				       what == CKPT_FIRST_MOMENTS ? z->m : z->v, own) < 0)
			rc = -ENOMEM;
		if (rc < 0) {
			snprintf(err, errlen, "out of memory gathering the optimizer state");
			free(own);
			return rc;
		}
		shard = own;
	}
	if (t->grid.d == 0)
		rc = ckpt_tp_gather(t->grid.tensor, m, shard, whole, err, errlen);
	free(own);
	return rc;
}

/* Under tensor or pipeline parallelism (fetch: tp_fetch_array or pp.h's pp_fetch_array): the
 * whole model and its whole moments gathered onto rank 0 alone
 * (the moments first over the data group where ZeRO sliced them, then the shards over the
 * tensor group of data rank 0, whose state every data rank shares; rank 0 holds one whole
 * array at a time, ckpt_save_fetched's), written as a 1-rank run writes them:
 * one llm.c model file and one state file, which any layout resumes. Gathered rather than
 * sharded: the shards of one layout are no other layout's, and at these sizes the gather costs
 * less than a second format. */
static void checkpoint_gathered(struct trainer *t, int step, ckpt_fetch_fn fetch, void *arg)
{
	char err[PATH_MAX + 256];
	if (t->gpu) /* the shards' weights into m, the moments into m or z (ZeRO) */
		gpt2_cuda_store(t->gpu, t->m);
	if (t->comm.rank == 0) {
		struct ckpt_state st = checkpoint_state(t, step);
		if (fsync(fileno(t->log)) < 0)
			die(t, "%s: %s", t->log_path, strerror(errno));
		if (ckpt_save_fetched(t->o.out, &t->mc, &st, t->s.keep, fetch, arg, err,
			    sizeof(err)) < 0)
			die(t, "checkpoint: %s", err);
	} else { /* ckpt_save_fetched's order */
		for (int what = CKPT_FIRST_MOMENTS; what <= CKPT_PARAMS; what++)
			if (fetch(arg, what, NULL, err, sizeof(err)) < 0)
				die(t, "checkpoint: %s", err);
	}
	comm_barrier(&t->comm);
}

/* The run's checkpoint after step (rank 0 writes, every rank waits): the model, then the state
 * with the loader's position; the log is synced first so that it never lags a checkpoint. With
 * ZeRO 1 and 2 each rank writes its own shard of the state instead (checkpoint_sharded); any
 * world size and stage resumes from either. */
static void checkpoint(struct trainer *t, int step)
{
	char err[PATH_MAX + 256];
	if (t->pp) { /* the stages' parts (ZeRO slices, tensor shards), an array at a time */
		struct pp_fetch f = { t->pp, &t->zero };
		pp_store(t->pp); /* a GPU stage's weights and moments into its host model */
		checkpoint_gathered(t, step, pp_fetch_array, &f);
		return;
	} else if (t->grid.T > 1) {
		checkpoint_gathered(t, step, tp_fetch_array, t);
		return;
	} else if (t->zero.stage > 0) {
		checkpoint_sharded(t, step);
		return;
	}
	if (t->comm.rank == 0) {
		struct ckpt_state st = checkpoint_state(t, step);
		if (t->gpu)
			gpt2_cuda_store(t->gpu, t->m);
		if (fsync(fileno(t->log)) < 0)
			die(t, "%s: %s", t->log_path, strerror(errno));
		if (ckpt_save(t->o.out, t->m, &st, t->s.keep, err, sizeof(err)) < 0)
			die(t, "checkpoint: %s", err);
	}
	comm_barrier(&t->comm);
}

/* ---- the run ---- */

/* The steps from the one after start_step to last_step: 0 when all ran, GUARD_EXIT_STOPPED
 * after a stop signal (with a checkpoint), 1 when the guard gave up. */
static int run_steps(struct trainer *t)
{
	for (int step = (int)t->start_step + 1; step <= t->last_step; step++) {
		struct step_result r;
		train_step(t, step, &r);
		log_step(t, step, &r);
		/* a skipped step changed nothing worth a checkpoint that rotates out an older one */
		int checkpoint_now =
			(t->s.ckpt_every > 0 && step % t->s.ckpt_every == 0 && !r.bad) ||
			step == t->last_step;
		if (checkpoint_now)
			checkpoint(t, step);
		/* the stop hook: a signal on any rank stops every rank after this same step */
		if (guard_stop_agreed(&t->comm) && step < t->last_step) {
			if (!checkpoint_now)
				checkpoint(t, step);
			if (t->comm.rank == 0) {
				report_write_svg(t->svg_path, t->points, t->nr_points,
					"ferry train: loss");
				printf("ferry train: stopped by %s after step %d with a checkpoint; continue "
				       "with ferry train --resume %s\n",
					guard_signal_name(guard_stop_signal()), step, t->o.out);
			}
			return GUARD_EXIT_STOPPED;
		}
		/* the give-up hook: the same decision on every rank (loss and norm are) */
		if (guard_should_give_up(&t->guard)) {
			if (t->comm.rank == 0)
				fprintf(stderr,
					"ferry train: %d steps in a row had a non-finite loss or "
					"gradient norm (step %d: loss %g, norm %g); stopping, the last "
					"checkpoint is the newest in %s\n",
					t->guard.bad_in_row, step, r.loss, r.norm, t->o.out);
			return 1;
		}
	}
	return 0;
}

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

/* Rank 0's last words of a run that ended with status, and its log closed. */
static void finish(struct trainer *t, int status)
{
	if (t->comm.rank != 0)
		return;
	if (status == 0)
		printf("ferry train: done at step %d; log %s, plot %s\n", t->last_step, t->log_path,
			t->svg_path);
	fclose(t->log);
	if (t->pp && status == 0)
		pp_report(t->pp, t->accum, stdout);
	if (t->m->profile && status == 0) /* a pipeline: rank 0's stage */
		print_profile(t->pp ? t->pp->m : t->m, t->last_step - (int)t->start_step);
}

static void trainer_done(struct trainer *t)
{
	free(t->points);
	free(t->settings_text);
	ckpt_state_done(&t->resume_state);
	gpt2_free(t->gen);
	gpt2_cuda_free(t->gpu);
	zero_done(&t->zero);
	if (t->pp)
		pp_done(t->pp);
	free(t->pp);
	gpt2_free(t->m);
	loader_free(t->train_loader);
	loader_free(t->val_loader);
	grid_done(&t->grid);
	comm_done(&t->comm);
}

#if FERRY_CUDA_BUILD_BESIDE
/* This ferry has no GPU trainer; ferry-cuda, built beside it, does (train/meson.build). Whether
 * this run needs it: --device cuda (only GPU ranks talk over NCCL). */
static bool needs_cuda_build(int argc, char **argv)
{
	struct train_settings s;
	struct train_opts o;
	char err[256];

	return settings_parse_args(argc, argv, &s, &o, err, sizeof(err)) == 0 && o.cuda;
}

/* Becomes ferry-cuda from this executable's directory, with the same arguments (argv[0] is
 * "train"), before MPI or anything else starts; returns only on failure, with one line said. */
static int run_in_cuda_build(int argc, char **argv)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	char **args = calloc((size_t)argc + 2, sizeof(*args));
	char *slash;

	if (n < 0 || !args) {
		fprintf(stderr, "ferry train: cannot find the GPU trainer: %s\n", strerror(errno));
		free(args);
		return 1;
	}
	dir[n] = '\0';
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	snprintf(path, sizeof(path), "%s/ferry-cuda", dir);
	args[0] = path;
	memcpy(args + 1, argv, (size_t)argc * sizeof(*args));
	execv(path, args);
	fprintf(stderr, "ferry train: this run needs the GPU trainer, %s: %s\n", path,
		strerror(errno));
	free(args);
	return 1;
}
#endif

int train_main(int argc, char **argv)
{
	struct trainer t = { 0 };
	int status;

#if FERRY_CUDA_BUILD_BESIDE
	if (needs_cuda_build(argc, argv))
		return run_in_cuda_build(argc, argv);
#endif
	setvbuf(stdout, NULL, _IOLBF, 0);
	comm_init(&t.comm, &argc, &argv); /* a launch it cannot serve ends the process */
	if (setup(&t, argc, argv) == SETTINGS_HELP) {
		if (t.comm.rank == 0)
			settings_usage(stdout);
		status = 0;
	} else {
		open_data(&t);
		build_model(&t);
		open_outputs(&t);
		prepare_steps(&t);
		status = run_steps(&t);
		finish(&t, status);
	}
	trainer_done(&t);
	return status;
}
