/* train/: checkpoints. The model file is llm.c's (256 int32 header, magic 20240326, version 3,
 * fp32 parameters in llm.c's order), so llm.c's GPT-2 weights load here and ours load there.
 * Our own state file beside it holds what llm.c's lacks: Adam moments, the step, the RNG, the
 * loader position and the run's settings. Both are written atomically (temp, fsync, rename). */
#ifndef FERRY_TRAIN_CKPT_H
#define FERRY_TRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "train/comm.h"
#include "train/model.h"

#define LLMC_MODEL_MAGIC   20240326
#define LLMC_MODEL_VERSION 3

/* Everything in a state file but the moments; settings is the run's settings as text
 * ("key value" lines), owned by the struct (ckpt_state_done frees it). */
struct ckpt_state {
	uint64_t step;         /* optimizer steps done */
	uint64_t rng;          /* the trainer's RNG after that step */
	uint64_t loader_epoch; /* the loader's position: the next batch to train on */
	/* The global position in the epoch's order, in samples (loader_state.position times
	 * ranks times batch), the same for any layout. State files before version 3 kept the
	 * rank's batch count here, in an order that depended on the world size. */
	uint64_t loader_position;
	char *settings;
	/* The loader's order settings (loader_config.block_bytes, window_blocks): they change
	 * the order as the seed does, so an exact resume needs them. 0 in a state file of
	 * version 1, which did not record them. */
	uint32_t loader_block_bytes;
	uint32_t loader_window_blocks;
	uint64_t nr_params; /* of the moments in the file: set by ckpt_read_state, not written */
	uint32_t version;   /* of the file: set by ckpt_read_state, not written */
};

void ckpt_state_done(struct ckpt_state *st);

/* All return 0 or -errno with a one-line reason in err. */
int ckpt_write_model(const char *path, const struct gpt2 *m, char *err, size_t errlen);
/* Reads only the header: the shape of the model in the file. */
int ckpt_read_model_config(const char *path, struct gpt2_config *c, char *err, size_t errlen);
/* Loads the parameters into m, whose config must equal the file's. */
int ckpt_read_model(const char *path, struct gpt2 *m, char *err, size_t errlen);

int ckpt_write_state(const char *path, const struct gpt2 *m, const struct ckpt_state *st, char *err,
	size_t errlen);
/* Fills st; with m non-NULL also loads the moments (m's nr_params must match the file). */
int ckpt_read_state(const char *path, struct gpt2 *m, struct ckpt_state *st, char *err,
	size_t errlen);

/* A run directory holds model_%08d.bin and state_%08d.bin per checkpoint; the state file is
 * written last, so a checkpoint exists once its state file does. A sharded checkpoint (ZeRO
 * stage 1 and 2, below) has manifest_%08d.txt and shard_%08d_%05d.bin per writing rank in place
 * of the state file, and is complete once DONE_%08d exists. */
void ckpt_paths(const char *dir, uint64_t step, char *model, char *state, size_t len);
int ckpt_save(const char *dir, const struct gpt2 *m, const struct ckpt_state *st, int keep,
	char *err, size_t errlen);
/* ckpt_save of a whole model that no one holds whole (tensor parallel shards): the same two
 * files, byte for byte, written from one buffer of the whole model's size that fetch fills with
 * one array at a time, the first moments, the second, then the parameters (in that order, so
 * that the caller's collectives match its peers'). The moments are checked finite before the
 * model file is written, and the state file is renamed into place last. fetch returns 0 or
 * -errno with a line in err; a failure may leave peers inside a collective (the trainer ends
 * the job). */
enum ckpt_array { CKPT_FIRST_MOMENTS, CKPT_SECOND_MOMENTS, CKPT_PARAMS };
typedef int (*ckpt_fetch_fn)(void *arg, int what, float *whole, char *err, size_t errlen);
int ckpt_save_fetched(const char *dir, const struct gpt2_config *c, const struct ckpt_state *st,
	int keep, ckpt_fetch_fn fetch, void *arg, char *err, size_t errlen);
/* The step of the newest checkpoint in dir: 0 and *step set, or -ENOENT. */
int ckpt_latest(const char *dir, uint64_t *step);
/* Reads the checkpoint of step in dir as a resume would, without a model to load into: the
 * model file's header and size, every parameter finite, the state file's size and checksum,
 * its moments finite and as many as the parameters; of a sharded one its DONE, its manifest and
 * every shard (size, XXH3, header, finite moments). 0 or -errno with a one-line reason. */
int ckpt_verify(const char *dir, uint64_t step, char *err, size_t errlen);
/* Called for each checkpoint that does not verify, newest first, with its reason. */
typedef void (*ckpt_skip_fn)(void *arg, uint64_t step, const char *reason);
/* The step of the newest checkpoint in dir that verifies: 0 and *step set; -ENOENT when dir
 * holds none, -EINVAL when none of those it holds verifies. One process reading every file:
 * the simple twin of ckpt_find_resumable_ranks, its oracle in the tests. */
int ckpt_find_resumable(const char *dir, uint64_t *step, ckpt_skip_fn skipped, void *arg);

/* The moments one rank of a resume loads (ckpt_load_state's [lo, hi)), for any checkpoint's
 * nr_params: zero.h's zero_slice_bounds(nr_params, world_size, rank, stage); stage 0 (or
 * world_size 1) all of them. */
struct ckpt_slice {
	int world_size, rank, stage;
};

/* ckpt_find_resumable over the ranks of c, each reading what it will load and no more: the model
 * file whole and the state file whole as ckpt_verify does, and of a sharded checkpoint its DONE,
 * its manifest and only the shards that overlap its slice (a shard no slice overlaps, an empty
 * one, is read by rank r % world_size of c): with W ranks on the same W, one shard a rank, not
 * W. The ranks agree on each candidate, newest first, with one allreduce_max_u64, so every rank
 * returns the same, and a shard damaged that one rank alone read makes all of them fall back
 * together. skipped is called on every rank with the same reason, the lowest finding rank's
 * (shared in one more collective). A collective of every rank of c. */
int ckpt_find_resumable_ranks(struct comm *c, const char *dir, const struct ckpt_slice *slice,
	uint64_t *step, ckpt_skip_fn skipped, void *arg);

/* ---- sharded checkpoints: each rank writes the moments of its slice, no gathering ----
 * Rank 0 calls ckpt_shard_begin (the step's old DONE and state file gone: a rewritten step is
 * never complete half old, half new), then after a barrier every rank ckpt_write_shard (its
 * file fsynced before it returns), the ranks' ckpt_shard_info are gathered to rank 0, which
 * writes the model file and ckpt_write_manifest, and after that ckpt_finish_sharded: the DONE
 * marker, then the --keep pruning. */
struct ckpt_shard_info {
	uint64_t lo, hi; /* the parameters whose moments it holds, [lo, hi) */
	uint64_t bytes;  /* of the file */
	uint64_t xxh3;   /* XXH3-64 of the whole file */
};

int ckpt_shard_begin(const char *dir, uint64_t step, char *err, size_t errlen);
/* m and v hold hi - lo floats each. */
int ckpt_write_shard(const char *dir, uint64_t step, int rank, int world_size, uint64_t nr_params,
	uint64_t lo, uint64_t hi, const float *m, const float *v, struct ckpt_shard_info *info,
	char *err, size_t errlen);
int ckpt_write_manifest(const char *dir, const struct ckpt_state *st, uint64_t nr_params,
	int zero_stage, int world_size, const struct ckpt_shard_info *shards, char *err,
	size_t errlen);
int ckpt_finish_sharded(const char *dir, uint64_t step, int keep, char *err, size_t errlen);

/* The state of the checkpoint of step in dir, whole or sharded (st as ckpt_read_state fills
 * it); with m non-NULL also the moments of the parameters [lo, hi) into m->m_memory + lo and
 * m->v_memory + lo, read from whichever shards hold them (any world size and stage: a
 * resharding), or from the whole state file. */
int ckpt_load_state(const char *dir, uint64_t step, struct gpt2 *m, uint64_t lo, uint64_t hi,
	struct ckpt_state *st, char *err, size_t errlen);

/* ---- tensor parallel (model.h's gpt2_tp): the files stay whole ----
 * Under tensor parallelism the model file and the state file are the whole model's, as a 1-rank
 * run writes them: gathered on save, scattered on load, so that any layout resumes any
 * checkpoint and llm.c reads the model (train_cmd.c's checkpoint_gathered and build_model use
 * these). A pipeline stage's layers are whole tensors' layer ranges, not shards: a stage
 * gathers them over grid.h's pipeline group into the same whole arrays before these calls (or,
 * at T == 1, instead of them), and on load keeps its layers of what every rank read.
 *
 * ckpt_tp_gather: the whole layout (nr of gpt2_param_sizes floats) of one flat array of the
 * tensor group's shards (params, or moments in the same layout): shard is this rank's
 * (m->nr_params floats of tensor rank m->tp.rank), whole is filled on tensor rank 0 only, the
 * one that writes (the others pass NULL): each shard is sent to it, one at a time, so no rank
 * holds T shards (a backend without sendrecv, NCCL, all-gathers them instead). A collective of
 * the tensor group. 0, or -ENOMEM with one line in err (on that rank alone: the trainer ends
 * the job).
 * ckpt_tp_scatter: this rank's shard of a whole array, read from the files by every rank
 * itself (no communication). */
int ckpt_tp_gather(struct comm *tensor, const struct gpt2 *m, const float *shard, float *whole,
	char *err, size_t errlen);
void ckpt_tp_scatter(const struct gpt2 *m, const float *whole, float *shard);

#endif
