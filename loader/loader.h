/* loader/: token batches for training, read ahead of use from any path (fast path on a ferry
 * mount) into a fixed ring of page-aligned (pinned, with CUDA) host buffers, and onto the GPU
 * when a device is given. The sample order is a pure function of (seed, epoch, global position),
 * the same for any world size: ranks take slices of each global batch. A (epoch, position) pair
 * resumes it exactly, on this or (converted, see struct loader_state) another layout. */
#ifndef FERRY_LOADER_H
#define FERRY_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum loader_format {
	LOADER_FORMAT_AUTO = 0, /* by content: llm.c header, Megatron .idx, else an error */
	LOADER_FORMAT_LLMC,     /* 256 int32 header, magic 20240520 (u16) or 20240801 (u32) */
	LOADER_FORMAT_RAW_U16,  /* headerless little-endian tokens */
	LOADER_FORMAT_RAW_U32,
	LOADER_FORMAT_MEGATRON, /* .bin + .idx (MMIDIDX) */
};

struct loader_config {
	const char *paths; /* a glob, a directory, or a file; shards are sorted by name */
	enum loader_format format;
	uint32_t batch;   /* B: sequences per batch on this rank */
	uint32_t seq_len; /* T: a sample is T+1 consecutive tokens of one shard */
	uint64_t seed;
	bool shuffle;              /* false: samples in file order (validation) */
	uint32_t rank, world_size; /* world_size 0 is taken as 1 */
	uint32_t nr_buffers;       /* batches read ahead; 0: 4 */
	int device;                /* -1: host only; >= 0: CUDA device to stage batches onto */
	int verbose;
	/* The shuffled order's shape (see struct sampler in loader_i.h): about block_bytes of
	 * tokens per block, window_blocks blocks per window (every rank reads each window
	 * whole). Like seed, they change the order, so a run that resumes must give the values
	 * it started with (ferry train saves them in its checkpoints). 0: LOADER_DEFAULT_*. The environment plays no part. */
	uint32_t block_bytes;   /* 1 .. LOADER_MAX_BLOCK_BYTES */
	uint32_t window_blocks; /* 1 .. LOADER_MAX_WINDOW_BLOCKS */
	/* On a ferry mount the daemon is told of the byte ranges of the next prefetch_batches
	 * batches after the one in use, in the order they are read (FERRY_IOC_PREFETCH), and
	 * fetches them ahead in that order. 0: LOADER_DEFAULT_PREFETCH_BYTES of batches. At
	 * most an epoch, cut to a quarter of the daemon's cache, at least nr_buffers. FERRY_LOADER_PREFETCH=K in
	 * the environment overrides it, =0 turns it off. Changes no byte of any batch. */
	uint32_t prefetch_batches;
	/* Samples per optimizer step over all ranks: world_size * batch * the micro-batches a
	 * step accumulates; 0: world_size * batch. It must be a multiple of world_size * batch.
	 * An epoch ends after its last whole global batch, so that layouts with the same global
	 * batch (2 ranks of B, 1 rank of 2B, 1 rank of B accumulating 2) see the same samples in
	 * the same order, step by step and across epochs. Changes the order as a seed would, but
	 * only at the end of an epoch (which samples are left over). */
	uint64_t global_batch;
};

#define LOADER_DEFAULT_PREFETCH_BYTES (256ull << 20)

/* 2 MiB blocks keep reads large on any mount (ferry's chunk is 8 MiB by default; FUSE splits
 * reads into 128 KiB-1 MiB requests anyway); 8 of them make a 16 MiB window, which every rank
 * reads. */
#define LOADER_DEFAULT_BLOCK_BYTES   (2u << 20)
#define LOADER_DEFAULT_WINDOW_BLOCKS 8u
#define LOADER_MAX_BLOCK_BYTES       (256u << 20)
#define LOADER_MAX_WINDOW_BLOCKS     1024u

/* Where the order stands: the next batch is the position-th of epoch. position counts global
 * micro-batches (world_size * batch samples, every rank's batch of one position is a slice of
 * it), so it is the same on every rank; position * world_size * batch is the global position in
 * the epoch's order, the layout-free form a checkpoint keeps (a run resumed on W' ranks of B'
 * seeks to that / (W' * B')). */
struct loader_state {
	uint64_t epoch;
	uint64_t position;
};

struct loader_batch {
	const int32_t *inputs;  /* (B, T) host tokens */
	const int32_t *targets; /* (B, T) host tokens: inputs shifted by one */
	int32_t *d_inputs;      /* (B, T) on the GPU when device >= 0, else NULL */
	int32_t *d_targets;
	void *ready_event;         /* cudaEvent_t the compute stream waits on; NULL on host */
	void *consumed_event;      /* cudaEvent_t to record on the stream that reads d_inputs and
				   * d_targets, after its last read: the loader writes a later
				   * batch into them only after it. NULL on host */
	struct loader_state state; /* the position of this batch */
	double wait_ms;            /* time loader_next_batch waited for data */
};

struct loader;

/* Opens the dataset and starts reading ahead. Every shard's header is read and checked
 * against the first shard's format and token width and its own size before this returns;
 * special files (FIFOs, devices) are refused without waiting. At most an eighth of
 * RLIMIT_NOFILE shards are open at once, whatever their number. -errno with a one-line
 * reason naming the file in errbuf. */
int loader_open(struct loader **out, const struct loader_config *cfg, char *errbuf, size_t errlen);
void loader_free(struct loader *l);
/* Fills b with the next batch; its buffers stay valid until the next call. Crosses epochs by
 * itself. 0 or -errno (a shard that turned out malformed or unreadable: -EINVAL / -EIO). */
int loader_next_batch(struct loader *l, struct loader_batch *b);
void loader_get_state(const struct loader *l, struct loader_state *st);
/* Repositions so that the next batch is the one at st (exact resume). */
int loader_seek(struct loader *l, const struct loader_state *st);
uint64_t loader_steps_per_epoch(const struct loader *l);
/* The vocabulary size the data declares: header[3] of our llm.c shards when set (ferry data
 * make writes 256), else 50257 for llm.c shards, else 0 (unknown). */
uint32_t loader_vocab_size(const struct loader *l);
/* The order settings in use (cfg's, with the defaults filled in): what a checkpoint saves. */
void loader_get_order(const struct loader *l, uint32_t *block_bytes, uint32_t *window_blocks);
/* The read path chosen ("ferry-direct", "cufile", "io_uring", "pread"), for logs. */
const char *loader_path_name(const struct loader *l);
/* The one-line reason of the last failed loader_next_batch or loader_seek ("" when none),
 * naming the file when one is at fault. Added after the first version of this header; the
 * functions above are unchanged. */
const char *loader_last_error(const struct loader *l);

/* Added for ferry train's checks (issue 16); the functions above are unchanged. */
/* The vocabulary the shards' header declares (header[3] of ferry's llm.c shards), 0 when it
 * declares none (llm.c's own shards, raw tokens, Megatron): then loader_vocab_size is a guess
 * and the trainer's --vocab decides. */
uint32_t loader_declared_vocab(const struct loader *l);
/* The i-th shard (in order): its token file and, for Megatron, its .idx (else NULL).
 * -ENOENT past the last. The strings live as long as the loader. */
int loader_shard_files(const struct loader *l, uint32_t i, const char **path,
	const char **idx_path);
/* Where token k (0..T) of row j of the batch at st comes from: its shard's path and the
 * token's index in that shard. Input (j, t) is k = t, target (j, t) is k = t + 1. */
void loader_token_source(const struct loader *l, const struct loader_state *st, uint32_t j,
	uint32_t k, const char **path, uint64_t *index);

/* `ferry data make|inspect ...`: the command line of the dataset tools (loader/data_cmd.c).
 * Returns the process exit status. */
int data_main(int argc, char **argv);

/* Added for prefetch from the training order (issue 11); the functions above are unchanged. */
struct loader_prefetch_info {
	bool on;             /* the daemon takes the loader's ranges (a ferry mount) */
	uint64_t horizon;    /* K: batches after the one in use it is told of */
	uint64_t ahead;      /* batches after the one in use whose chunks the daemon has gone
			      * through: present, in flight, or queued for fetching */
	uint64_t nr_calls;   /* FERRY_IOC_PREFETCH calls */
	uint64_t nr_bound;   /* calls the daemon's readahead bound stopped short */
	uint64_t nr_started; /* chunk fetches they started */
};
void loader_get_prefetch(const struct loader *l, struct loader_prefetch_info *pi);

/* Takes the buffer of the batch the last loader_next_batch handed out out of the ring, with
 * spare in its place, so that the batch outlives the next call without a copy. Returns that
 * buffer, now the caller's to free() and never touched by the loader again: it holds the batch
 * as b said (inputs at its start; targets at B * T, or at 1 when the batch was one run of
 * B * T + 1 tokens). spare, 2 * B * T int32 from malloc(), is the loader's from then on (the
 * readers fill it in turn; loader_free frees it). NULL when no batch is held (before the first
 * loader_next_batch, after a failed one or a seek): spare stays the caller's. The host tokens
 * only: a device's d_inputs and d_targets stay in the ring. From the thread that calls
 * loader_next_batch, as that one's. */
int32_t *loader_swap_batch_buffer(struct loader *l, int32_t *spare);

#endif
