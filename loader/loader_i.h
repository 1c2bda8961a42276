/* loader/ internals: shard formats (shard.c), the sample order (sampler.c), ring bookkeeping
 * (ring.c), the read backends (read_pread in read.c, io_uring in read_uring.c) and the staging
 * backend (stage_host.c or stage_cuda.c, one of them compiled in), GPUDirect Storage (gds_cuda.c
 * or gds_none.c), and the loader's own state shared by loader.c and its direct paths (direct.c).
 * Not a public header. */
#ifndef FERRY_LOADER_I_H
#define FERRY_LOADER_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/ferry_ctl.h"
#include "loader/loader.h"

#define LLMC_HEADER_INTS   256
#define LLMC_HEADER_BYTES  (LLMC_HEADER_INTS * 4)
#define LLMC_MAGIC_U16     20240520
#define LLMC_MAGIC_U32     20240801
#define LLMC_VERSION_U16   1
#define LLMC_VERSION_U32   7
#define LLMC_VOCAB         50257
#define MEGATRON_MAGIC     "MMIDIDX\0\0"
#define MEGATRON_HDR_BYTES 34 /* magic 9, version 8, dtype 1, nr_seqs 8, nr_docs 8 */
/* No real token file holds 2^48 tokens; a count above it is a corrupt header, and refusing it
 * keeps every size computation below far from 64-bit overflow. */
#define SHARD_MAX_TOKENS (1ull << 48)

/* ---- shard.c: one token file and what its header says ---- */

/* What a header declares, filled by shard_parse_header*() without trusting it: every count is
 * checked against the file size before it is stored. */
struct shard_info {
	enum loader_format format;
	uint32_t token_bytes; /* 2 or 4 */
	uint64_t data_offset; /* bytes before the first token (1024 for llm.c, 0 otherwise) */
	uint64_t nr_tokens;
	uint32_t vocab;   /* 0: not declared */
	uint32_t version; /* llm.c/Megatron header version */
	uint64_t nr_seqs; /* Megatron: sequences in the .idx */
};

/* Parses an llm.c header (hdr holds the first LLMC_HEADER_BYTES of a file of file_bytes bytes;
 * hdr_bytes may be fewer when the file is shorter). 0 or -EINVAL with a reason in err. */
int shard_parse_llmc(const void *hdr, size_t hdr_bytes, uint64_t file_bytes,
	struct shard_info *info, char *err, size_t errlen);
/* Parses a whole Megatron .idx (idx_bytes long) against its .bin's size. */
int shard_parse_megatron_idx(const void *idx, size_t idx_bytes, uint64_t bin_bytes,
	struct shard_info *info, char *err, size_t errlen);
/* The two steps of it, so that a file is checked a piece at a time: the header (hdr_bytes of
 * it, at least MEGATRON_HDR_BYTES) against the .idx's size, which its counts must give
 * exactly; then nr sequences from the first-th, their sizes (int32) and pointers (int64)
 * given apart, summing their tokens into *sum (0 at the start). */
int shard_parse_megatron_header(const void *hdr, size_t hdr_bytes, uint64_t idx_bytes,
	struct shard_info *info, char *err, size_t errlen);
int shard_check_megatron_seqs(const void *sizes, const void *ptrs, uint64_t first, uint64_t nr,
	uint32_t token_bytes, uint64_t bin_bytes, uint64_t *sum, char *err, size_t errlen);
/* Probes one file: format by content (or as given), header checked against the size. path may
 * name a Megatron .bin or .idx. Reads the header (and, for Megatron, the .idx a bounded piece
 * at a time once its header agrees with its size). Special files are refused without waiting. */
int shard_probe(const char *path, enum loader_format format, struct shard_info *info, char *err,
	size_t errlen);
/* Opens a token file for reading (flags added, e.g. O_DIRECT): a FIFO, socket, device or
 * directory is refused at once with -EINVAL, never waited on. The fd, or -errno with the
 * reason in err; *file_bytes (when not NULL) gets the size. */
int shard_open_file(const char *path, int flags, uint64_t *file_bytes, char *err, size_t errlen);
const char *shard_format_name(enum loader_format format);

/* One shard of a dataset. Sizes come from stat at open; the header is read and checked
 * against them by dataset_check_all (or, without it, when the shard is first read). After
 * loader_open, fd, checked, ferry_probed, on_ferry, users and the lru links are under the
 * loader's dataset lock; the rest is read-only. */
struct shard {
	char *path;     /* the token file (the .bin for Megatron) */
	char *idx_path; /* Megatron .idx, else NULL */
	uint64_t file_bytes;
	uint64_t nr_tokens;    /* as derived from file_bytes; the header must agree */
	uint64_t first_sample; /* global index of this shard's first sample */
	uint64_t nr_samples;
	int fd; /* -1 until first read; see dataset_prepare() */
	bool checked;
	bool ferry_probed;           /* on_ferry is known */
	bool on_ferry;               /* FERRY_XATTR_SOURCE present: the fast path may apply */
	uint32_t users;              /* pins (reads in flight on fd): it is not closed while > 0 */
	uint32_t lru_prev, lru_next; /* in the dataset's LRU while fd >= 0 and users == 0 */
};

#define DATASET_NONE UINT32_MAX

/* The sorted list of shards of a loader. All shards share the format and token width of the
 * first. Open descriptors are bounded: at most max_open shards have fd >= 0 as long as fewer
 * than max_open are pinned at once (the loader's readers pin at most max_open between them);
 * the open shards nobody pins form an LRU list, least recently used at lru_head, closed first
 * when another must open. */
struct dataset {
	struct shard *shards;
	uint32_t nr_shards;
	enum loader_format format;
	uint32_t token_bytes;
	uint64_t data_offset;
	uint32_t vocab;
	uint32_t declared_vocab; /* the first header's, 0: none (vocab is then a guess) */
	uint32_t seq_len;
	uint64_t nr_samples;
	uint32_t nr_open;            /* shards with fd >= 0 */
	uint32_t max_open;           /* from RLIMIT_NOFILE at open: dataset_max_open() */
	uint32_t lru_head, lru_tail; /* DATASET_NONE when empty */
};

/* Shards kept open at most by one dataset: an eighth of RLIMIT_NOFILE (a trainer has two
 * loaders, each with its fast path's descriptors as well, and MPI, sockets and the rest need
 * theirs), between DATASET_MIN_OPEN and DATASET_MAX_OPEN. */
#define DATASET_MIN_OPEN 4
#define DATASET_MAX_OPEN 128
uint32_t dataset_max_open(void);

int dataset_open(struct dataset *ds, const char *paths, enum loader_format format, uint32_t seq_len,
	char *err, size_t errlen);
void dataset_done(struct dataset *ds);
/* Reads and checks the header of every shard not yet checked, with up to nr_threads threads:
 * its format, token width and token count must be the first shard's and its size's. 0, or
 * -errno with a reason naming the file (the first failing one in name order) in err. Before
 * the dataset is shared with other threads. */
int dataset_check_all(struct dataset *ds, uint32_t nr_threads, char *err, size_t errlen);
/* The shard holding global sample g (g < nr_samples). */
uint32_t dataset_find(const struct dataset *ds, uint64_t g);
/* Opens (if needed) and, unless checked, checks the header of shard s, closing the least
 * recently used unpinned shard when max_open are open. 0 or -errno, err naming the file. */
int dataset_prepare(struct dataset *ds, uint32_t s, char *err, size_t errlen);
/* dataset_prepare, and s stays open until as many dataset_unpin. */
int dataset_pin(struct dataset *ds, uint32_t s, char *err, size_t errlen);
void dataset_unpin(struct dataset *ds, uint32_t s);

/* ---- sampler.c: the order, a pure function ---- */

/* The order is one sequence of samples per epoch, the same for every layout: its k-th sample
 * is sampler_order(epoch, k), a function of (seed, epoch, k) and the order's shape (block and
 * window) only. Ranks take slices of it: batch `position` of rank r holds the samples at
 * k = (position * world + r) * B + j, j < B; the world * B samples of a position are one global
 * micro-batch, and global_batch / (world * B) micro-batches (gradient accumulation) make an
 * optimizer step. So W ranks of batch B with A micro-batches a step read, step by step, the
 * same samples as W' ranks of B' with A' whenever W * B * A = W' * B' * A'. An epoch uses its
 * first used_samples = nr_samples rounded down to whole global batches (a number the same for
 * all such layouts); every rank has steps_per_epoch = used_samples / (B * world) batches.
 * Without shuffle, sampler_order(k) is k: file order.
 *
 * Shuffled, the order is a two-level shuffle built for large reads:
 * - the files' samples, rotated by an offset drawn per epoch (so block boundaries move each
 *   epoch), are cut into blocks of block_samples consecutive samples (about 2 MiB of tokens);
 * - the nr_blocks blocks that fill whole windows are permuted per epoch (a keyed Feistel
 *   bijection); window w is blocks [w * window_blocks, (w + 1) * window_blocks) of that order;
 * - the order's positions [w * window_samples, (w + 1) * window_samples) take the window's
 *   samples in an order drawn per (epoch, window) (another keyed bijection): a shuffle buffer
 *   whose content the block order fixes;
 * - the samples after the last whole window are the tail window, permuted the same way.
 * A window is global: every rank's slices of those positions come out of it, so a rank reads
 * the whole window (each block with one large read) and uses 1/world of it. The price of the
 * layout-free order is that read amplification (world x the bytes a rank trains on, read from
 * the page cache or the ferry cache of its node; the network fetch is shared on one mount). A
 * batch that straddles two windows (one per window per rank at most) takes its rows from both;
 * one over more than two (window_samples < B), or whose second window has no room at once, is
 * read a row at a time. The order is also less random than a
 * full permutation: within a window, positions draw from window_blocks blocks only; which
 * samples share a block changes every epoch through the rotation. A larger window
 * (loader_config.window_blocks) mixes more at the cost of window memory; a full permutation
 * reads one sample (~2 KiB) per read, which bench_loader.sh measured at about a third of dd's
 * rate. */
struct sampler {
	uint64_t nr_samples;
	uint64_t steps_per_epoch;
	uint64_t seed;
	uint32_t batch, world, rank;
	bool shuffle;
	uint64_t global_batch;   /* samples per optimizer step, a multiple of batch * world */
	uint64_t used_samples;   /* per epoch: whole global batches */
	uint64_t block_samples;  /* from block_bytes alone: not from the batch */
	uint32_t window_blocks;  /* blocks per window */
	uint64_t window_samples; /* block_samples * window_blocks */
	uint64_t nr_windows;     /* whole windows per epoch; window nr_windows is the tail */
	uint64_t nr_blocks;      /* nr_windows * window_blocks */
	uint64_t tail_samples;   /* after the whole windows */
};

/* The loader's block (about this many bytes of tokens: block_samples = block_bytes /
 * (T * token bytes)) and window (blocks per window) come from loader_config.block_bytes and
 * window_blocks (LOADER_DEFAULT_* in loader.h); they change the order as a seed would. */
/* The defaults under their older names (tests/gpu/loader_gpu.c builds its oracle with them). */
#define LOADER_BLOCK_BYTES   LOADER_DEFAULT_BLOCK_BYTES
#define LOADER_WINDOW_BLOCKS LOADER_DEFAULT_WINDOW_BLOCKS

/* Global samples [first, first + nr), which are slots [slot, slot + nr) of their window. */
struct sampler_run {
	uint64_t first;
	uint64_t nr;
	uint64_t slot;
};
/* A window has at most window_blocks + 1 runs (one block may wrap past the last sample). */
#define SAMPLER_MAX_RUNS(s) ((s)->window_blocks + 1u)

/* global_batch: samples per optimizer step over all ranks; 0 (or not a multiple of
 * batch * world): batch * world. */
void sampler_init(struct sampler *s, uint64_t nr_samples, uint32_t batch, uint32_t world,
	uint32_t rank, uint64_t seed, bool shuffle, uint64_t block_samples, uint32_t window_blocks,
	uint64_t global_batch);
/* The position in the epoch's order of the j-th sample of this rank's batch `position`. */
uint64_t sampler_index(const struct sampler *s, uint64_t position, uint32_t j);
/* The k-th sample of the epoch's order (k < nr_samples): the same on every rank and layout. */
uint64_t sampler_order(const struct sampler *s, uint64_t epoch, uint64_t k);
/* The j-th sample of this rank's batch at (epoch, position); position < steps_per_epoch. */
uint64_t sampler_sample(const struct sampler *s, uint64_t epoch, uint64_t position, uint32_t j);
/* Shuffled order: the window of order position k, its number of samples, the runs of files it
 * reads, and the slot (in [0, size)) of position k in it. */
uint64_t sampler_window(const struct sampler *s, uint64_t k);
uint64_t sampler_window_size(const struct sampler *s, uint64_t window);
uint32_t sampler_window_runs(const struct sampler *s, uint64_t epoch, uint64_t window,
	struct sampler_run *runs);
uint64_t sampler_window_slot(const struct sampler *s, uint64_t epoch, uint64_t k);
/* Windows an epoch reaches into: those holding positions below used_samples. */
uint64_t sampler_nr_windows_used(const struct sampler *s);
/* The window holding all of this rank's batch at position, or SAMPLER_NO_WINDOW when the
 * batch straddles windows (it is then read a sample at a time). */
#define SAMPLER_NO_WINDOW UINT64_MAX
uint64_t sampler_batch_window(const struct sampler *s, uint64_t position);
/* A keyed bijection of [0, n), the building block of the order. */
uint64_t sampler_feistel(uint64_t key, uint64_t n, uint64_t x);
/* The state after st (next position, crossing into the next epoch). */
void sampler_advance(const struct sampler *s, struct loader_state *st);

/* ---- ring.c: which slot the readers fill and the consumer takes ---- */

/* Counters only; the caller's lock protects them. Several readers fill slots at once: a reader
 * claims the next slot (claimed++), fills it outside the lock and completes it; completions
 * may come out of order, and filled advances only over a run of completed slots, so the
 * consumer always takes batches in order. Invariant:
 * released <= taken <= filled <= claimed <= released + nr, nr <= RING_MAX_SLOTS; bit i of
 * done is set for a slot i that completed beyond filled. Slot of the n-th batch: n % nr. The
 * consumer holds the last slot taken until it releases it (on its next take), so the readers
 * can run nr - 1 batches ahead of the batch in use. */
#define RING_MAX_SLOTS 64
struct ring {
	uint32_t nr;
	uint64_t filled, taken, released;
	uint64_t claimed;
	uint64_t done;
};

void ring_init(struct ring *r, uint32_t nr);
/* Slot to claim for filling next, or -1 when every slot is claimed or held. */
int ring_fill_slot(const struct ring *r);
void ring_claimed(struct ring *r);
/* Marks a claimed slot complete; filled moves past every completed slot in order. */
void ring_complete(struct ring *r, uint32_t slot);
/* Claims the next slot and completes it at once (one reader). */
void ring_filled(struct ring *r);
/* Slot to take next, or -1 when none is filled. */
int ring_take_slot(const struct ring *r);
void ring_taken(struct ring *r);
/* Gives back every taken slot. */
void ring_release_all(struct ring *r);
/* Forgets every filled batch (after a seek); requires no slot held or being filled. */
void ring_reset(struct ring *r);

/* ---- read backends ---- */

/* One read: at least `need` bytes (of `len` asked) from fd at off into dst. */
struct read_op {
	int fd;
	uint64_t off;
	uint32_t len;
	uint32_t need;
	void *dst;
	int res;   /* out: bytes read, or -errno */
	bool done; /* res is final already: read_uring_run skips the op */
};

struct read_uring;
/* pread twin: the oracle. Fills res of each op; returns 0 or the first op's -errno. */
int read_pread_run(struct read_op *ops, uint32_t nr_ops);
/* Reads what the page cache holds now without blocking (preadv2 RWF_NOWAIT) and marks those
 * ops done; the rest are left for io_uring, whose per-op cost is higher for cached data.
 * Returns the ops done, or -EOPNOTSUPP when the file system cannot do it. */
int read_nowait_run(struct read_op *ops, uint32_t nr_ops);
/* io_uring backend (read_uring.c, or a stub that says -ENOSYS without liburing). */
int read_uring_new(struct read_uring **out, uint32_t depth);
void read_uring_free(struct read_uring *u);
int read_uring_run(struct read_uring *u, struct read_op *ops, uint32_t nr_ops);

/* ---- staging backend (stage_host.c or stage_cuda.c) ---- */

/* Raw token rows of a batch: row b starts at token b * row_stride of the slot's host buffer
 * and holds T + 1 tokens (row_stride is T + 1, or T when the batch was one contiguous run). */
struct stage;
int stage_new(struct stage **out, int device, uint32_t nr_slots, size_t raw_bytes, uint32_t batch,
	uint32_t seq_len, char *err, size_t errlen);
void stage_free(struct stage *st);
/* Page-aligned host buffer of slot (pinned with CUDA); raw_bytes long. */
void *stage_host_buffer(struct stage *st, uint32_t slot);
/* Starts the copy of slot's rows to the GPU and the widening there; fills d_inputs,
 * d_targets, ready_event. A no-op on host (device < 0). */
int stage_upload(struct stage *st, uint32_t slot, uint32_t token_bytes, uint32_t row_stride,
	struct loader_batch *b);
/* Waits until the GPU no longer reads slot's host buffer (before the reader refills it). */
int stage_reclaim(struct stage *st, uint32_t slot);
const char *stage_name(void);

/* cufile path (stage_cuda.c; the host twin says no): the slot's device buffer of raw_bytes, which
 * the reader fills itself, or NULL on host. */
void *stage_device_buffer(struct stage *st, uint32_t slot);
/* cufile path, on the reader: the slot's device buffer holds the batch's raw rows once the work
 * queued on stream (a cudaStream_t) is done. Widens them there after that work, copies the
 * int32 batch back to h_inputs and h_targets (the host half of a batch) and waits for it; the
 * next stage_upload of the slot then only hands the device buffers out. 0 or -EIO. */
int stage_widen_device(struct stage *st, uint32_t slot, void *stream, uint32_t token_bytes,
	uint32_t row_stride, int32_t *h_inputs, int32_t *h_targets);

/* ---- GPUDirect Storage (gds_cuda.c with CUDA, gds_none.c without) ---- */

/* libcufile loaded at run time (dlopen) and its driver opened; one per loader. The functions
 * are thread-safe as libcufile's are. */
struct gds;
/* -ENOSYS (built without CUDA, or no libcufile) or -EIO (the driver did not open), with the
 * reason in err. */
int gds_open(struct gds **out, int device, char *err, size_t errlen);
void gds_free(struct gds *g);
/* A cuFile handle of an fd (opened with O_DIRECT), in *handle. 0 or -EIO. */
int gds_handle_register(struct gds *g, int fd, void **handle);
void gds_handle_deregister(struct gds *g, void *handle);

/* One reader's registered device bounce buffer of bytes, and its stream. */
struct gds_reader;
int gds_reader_new(struct gds *g, size_t bytes, struct gds_reader **out);
void gds_reader_free(struct gds_reader *gr);
void *gds_reader_stream(struct gds_reader *gr);
/* cuFileRead of len bytes at file_off of handle into the bounce buffer at buf_off. The bytes
 * read, or -errno (-EIO for a cuFile error). */
int64_t gds_read(struct gds_reader *gr, void *handle, uint64_t file_off, size_t len,
	uint64_t buf_off);
/* Queues a device copy of len bytes from the bounce buffer at buf_off to d_dst on the
 * reader's stream. 0 or -EIO. */
int gds_copy(struct gds_reader *gr, void *d_dst, uint64_t buf_off, size_t len);
/* Waits for what was queued on the reader's stream. 0 or -EIO. */
int gds_sync(struct gds_reader *gr);

/* ---- loader.c and direct.c: the loader, its readers, and the read paths ---- */

enum read_path { PATH_DIRECT, PATH_CUFILE, PATH_URING, PATH_PREAD };

#define DIRECT_ALIGN 4096u
/* O_DIRECT descriptors of cache files a reader keeps (two fds each), at most: fewer when
 * RLIMIT_NOFILE is low (see direct_nr_fds). */
#define DIRECT_NR_FDS  16
#define DIRECT_NR_HELD 64
/* Windows kept: the one being used and the next one, read ahead. A third, so that a reader
 * lagging on the previous window never delays the read-ahead, measured 5% slower (shuffled,
 * bench_loader.sh): 16 MiB more for the CPU's caches to lose. */
#define NR_WINDOWS 2
/* The fast path reads only bytes it has checked against the daemon's block checksums, so it
 * reads whole blocks: the block-aligned cover of each read. Reads at least this long go
 * through it (window pieces in place, with block-sized room around each; file-order batches
 * through the bounce buffer); shorter ones (tiny shards, small batches) read through the
 * mount, where a whole block for a few KiB would cost more than it saves. */
#define DIRECT_BLOCK     FERRY_RESIDENT_BLOCK_BYTES
#define DIRECT_MIN_BYTES (64u << 10)

/* A staging slot. Written by the reader that claimed it while the ring says it is being
 * filled, read by the consumer once taken; the ring (under loader->lock) orders the two. */
struct loader_slot {
	struct loader_state state;
	uint32_t row_stride;
	int err;
	char errmsg[256];
	int32_t *wide; /* 2 * B * T int32: inputs then targets, or one run of B*T+1 */
	const int32_t *inputs, *targets;
};

/* An O_DIRECT descriptor of a ferry cache file, reused while the daemon answers the same
 * path (by hash) for the shard. One reader's own. */
struct direct_fd {
	uint32_t shard;
	uint64_t path_hash;
	int fd;
	int buffered_fd; /* the same file without O_DIRECT, for what the page cache holds */
	void *cufile;    /* cuFile handle of fd on the cufile path, else NULL */
};

/* A block-aligned range of a shard the daemon made resident and holds until expires_ms
 * (CLOCK_MONOTONIC, taken before the ioctl, so never later than the daemon's own expiry),
 * with the checksum of each of its blocks as the daemon answered them: sums[k] is the block
 * at start + k * DIRECT_BLOCK (end is clipped to the file, and to the blocks with a sum).
 * Reads inside it need no ioctl. Under loader->held_lock; an entry with end == 0 is free. */
struct held_range {
	uint32_t shard;
	uint64_t start, end;
	double expires_ms;
	uint64_t path_hash;
	uint64_t *sums; /* FERRY_RESIDENT_MAX_SUMS of loader->held_sums, set at open */
	char path[sizeof(((struct ferry_resident *)0)->cache_path)];
};

/* One piece of a window: the window's slots [slot, slot + nr) are samples that lie end to end
 * in one shard, read with one read into the window's buffer at data. */
struct window_piece {
	uint64_t slot, nr;
	uint64_t data; /* offset of the first token in the window's buffer */
};

enum window_state { WINDOW_FREE, WINDOW_LOADING, WINDOW_READY };

/* A window of the shuffled order (see struct sampler), read whole. Under loader->lock:
 * state, epoch, index, users, last_use; buf and pieces are written only by the reader that set
 * state LOADING, and read only while READY and users > 0 (a READY window with no users may be
 * reused for another). */
struct window {
	enum window_state state;
	uint64_t epoch, index;
	uint32_t users;
	uint64_t last_use;
	char *buf;
	struct window_piece *pieces;
	uint32_t nr_pieces;
};

/* A fast-path read waiting to be checked and copied out of the bounce buffer (or read in
 * place when dst equals src). The op reads the blocks [block_off, block_end) of the cache file
 * into op->dst, whose checksums are nr_sums entries of the reader's sums from sum_first; a
 * block that does not match is read again, through the mount (plain_fd at plain_off). */
struct direct_copy {
	uint32_t op; /* index in ops */
	void *dst;
	const void *src;
	uint32_t len;
	int plain_fd; /* the shard itself, for the fallback */
	uint64_t plain_off;
	uint64_t block_off, block_end;
	uint32_t sum_first, nr_sums;
};

/* One reader thread and what it alone touches: it claims a slot, reads its batch and widens
 * it, while the other readers fill the next slots. */
struct reader {
	struct loader *l;
	pthread_t thread;
	bool started;
	struct read_uring *uring;
	struct read_op *ops;
	struct direct_copy *copies;
	uint32_t *op_shard; /* the shard of each op */
	bool *on_ferry;     /* each op's shard is on a ferry mount */
	uint32_t *pinned;   /* shards whose users count this batch holds */
	uint32_t nr_pinned;
	uint32_t max_ops; /* length of ops, copies, op_shard, on_ferry, pinned */
	struct sampler_run *runs;
	const char **rows; /* B: where each row of a shuffled batch lies in its window */
	void *bounce;
	uint64_t *sums; /* the block checksums of a batch's fast-path reads */
	uint32_t max_sums, nr_sums;
	const void *run_src;    /* set by read_ops: where the checked bytes of a lone op lie in
				 * the bounce buffer, when they were left there (see read_ops) */
	struct gds_reader *gds; /* cufile path: registered device bounce buffer, else NULL */
	struct direct_fd dfds[DIRECT_NR_FDS]; /* the first l->nr_dfds are used */
	uint32_t *group;   /* max_pins: the distinct shards of the ops read at once */
	uint32_t max_pins; /* shards this reader pins at once: its share of ds.max_open */
};

/* Fields under "lock" are shared with the consumer; ds_lock guards the dataset's fds and
 * lazily-read headers; held_lock the remembered resident ranges; the rest are set in
 * loader_open and then read-only, or atomics. */
struct loader {
	struct loader_config cfg;
	char *paths;
	struct sampler sampler; /* read-only */
	struct stage *stage;
	size_t raw_bytes;
	size_t bounce_bytes;
	uint32_t block_bytes, window_blocks;
	struct window windows[NR_WINDOWS]; /* lock (see struct window) */
	uint64_t window_clock;             /* lock */
	size_t window_bytes;               /* capacity of each window's buffer */
	uint32_t max_pieces;
	struct loader_slot *slots;
	uint32_t nr_slots;
	struct reader *readers;
	uint32_t nr_readers;
	uint32_t nr_dfds; /* direct_fd slots per reader, 1..DIRECT_NR_FDS */
	bool force_pread;

	pthread_mutex_t ds_lock;
	struct dataset ds; /* ds_lock (after open) */

	pthread_mutex_t held_lock;
	struct held_range held[DIRECT_NR_HELD];   /* held_lock */
	uint64_t *held_sums;                      /* held_lock: the held ranges' sums */
	uint32_t chunk_bytes;                     /* held_lock: the cache's chunk, 0 until known */
	_Atomic uint64_t nr_ioctls;               /* FERRY_IOC_RESIDENT calls, for the log */
	_Atomic uint64_t nr_direct_reads;         /* O_DIRECT reads of cache files */
	_Atomic uint64_t nr_verified_blocks;      /* fast-path blocks that matched their sums */
	_Atomic uint64_t nr_fallbacks;            /* fast-path reads redone through the mount: a
						 * block that did not match, or had no sum */
	_Atomic bool said_mismatch, said_missing; /* the first of each was said */
	_Atomic uint64_t nr_rows_alone; /* shuffled batches read a row at a time, not out of
					 * windows (see fill_batch) */

	_Atomic bool nowait_ok; /* preadv2(RWF_NOWAIT) works on these files */
	_Atomic uint32_t direct_fails;
	_Atomic bool direct_allowed;
	struct gds *gds;        /* libcufile, when the cufile path was set up */
	_Atomic bool cufile_ok; /* the cufile path is in use (cleared for good on a failure) */
	_Atomic int path;       /* enum read_path now in use */

	pthread_mutex_t lock;
	pthread_cond_t fill_cond;       /* readers wait here: a slot to fill, stop */
	pthread_cond_t window_cond;     /* readers wait here: a window read, or given back */
	pthread_cond_t ready_cond;      /* the consumer waits here: a slot filled, a reader done */
	struct ring ring;               /* lock */
	struct loader_state fill_state; /* lock: the batch the readers claim next */
	struct loader_state next_state; /* lock: the batch loader_next_batch returns next */
	uint32_t nr_busy;               /* lock: readers filling a slot outside the lock */
	bool reader_paused;             /* lock: stopped after a failed batch until a seek */
	bool stop;                      /* lock */
	/* Prefetch from the order (prefetch.c): its thread waits on prefetch_cond, signalled
	 * when the consumer moves on, seeks (prefetch_gen counts the seeks) or stops. */
	struct prefetch *prefetch; /* the thread's own; NULL when off */
	pthread_t prefetch_thread;
	bool prefetch_started;
	pthread_cond_t prefetch_cond;
	uint64_t prefetch_gen;        /* lock */
	_Atomic uint64_t pf_horizon;  /* K in use: cut by the daemon's cache once it answers */
	_Atomic bool pf_on;           /* the daemon takes the ranges */
	_Atomic uint64_t pf_ahead_to; /* global batch: those before it were handed over whole */
	_Atomic uint64_t pf_calls, pf_bound, pf_started;
	/* Consumer thread: this epoch's batches and data wait, for the per-epoch line. */
	uint64_t epoch_batches;
	double epoch_wait_ms;
	int sticky_err;       /* lock: the consumer met this error; until a seek */
	char last_error[256]; /* consumer thread */
};

/* loader.c */
void loader_say(const struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double loader_now_ms(void);
const char *read_path_name(enum read_path p);
/* A reader's group of ops read at once: their shards pinned (and probed for the fast path)
 * until reader_unpin_shards, at most max_pins of them (reader_group_end). */
uint32_t reader_group_end(struct reader *r, uint32_t first, uint32_t nr_ops);
int reader_pin_shards(struct reader *r, uint32_t first, uint32_t end, char *err, size_t errlen);
void reader_unpin_shards(struct reader *r);

/* prefetch.c: on a ferry mount, the thread that tells the daemon the ranges of the next
 * batches (FERRY_IOC_PREFETCH). Started before the readers; 0 or -errno (-ENOMEM). */
int prefetch_start(struct loader *l);
/* Joins the thread (l->stop set and prefetch_cond signalled first) and frees its state. */
void prefetch_stop(struct loader *l);

/* direct.c: the ferry fast path (the daemon's cache file, checked against its block sums) and
 * the cufile path. Every failure falls back to the plain reads of loader.c. */
/* Whether path lies on a ferry mount. */
bool direct_probe(const char *path);
/* The read path of a new loader: the fast path (or cufile, when asked for) when the first
 * shard is on a ferry mount, else plain. Sets l->direct_allowed, and l->gds for cufile. */
enum read_path direct_choose_path(struct loader *l, enum read_path plain);
/* The fast path's buffers (bounce_bytes sized, sums, device buffers), after the readers are
 * made. 0 or -ENOMEM; direct_reader_done and direct_done free what was made. */
int direct_setup(struct loader *l);
void direct_reader_done(struct reader *r);
void direct_done(struct loader *l);
/* Before the reads of ops [first, end) (pinned): turns those on a ferry mount into fast-path
 * reads of the cache file (into the bounce buffer, or in place: window pieces), and takes what
 * the page cache holds of them at once. The number of fast-path reads, for
 * direct_check_group after the reads. */
uint32_t direct_prepare_group(struct reader *r, uint32_t first, uint32_t end, bool in_place);
/* After them: checks each fast-path read against its sums and copies it out (a lone op on the
 * host is left in the bounce buffer: r->run_src), or redoes it through the mount. */
void direct_check_group(struct reader *r, uint32_t nr_copies, bool in_place, bool lone);
/* A file-order batch of nr_ops ops (whose fd holds a shard index) by the cufile path into the
 * slot's device buffer; raw is the slot's host buffer the ops point into. 0 when staged, else
 * -errno with nothing staged and the ops as they were (the caller reads by the host path). */
int cufile_fill(struct reader *r, uint32_t slot_idx, uint32_t nr_ops, const char *raw);

/* ---- block_hash.c or block_hash_x86.c ---- */

/* XXH3_64bits (seed 0) of len bytes: the checksum of a block of the ferry fast path. */
uint64_t block_hash(const void *data, size_t len);

/* One run of n raw tokens into n int32. */
void widen_run(const void *raw, uint32_t token_bytes, size_t n, int32_t *out);
/* Host widening, the CPU twin of the GPU kernel. */
void widen_rows(const void *raw, uint32_t token_bytes, uint32_t batch, uint32_t seq_len,
	uint32_t row_stride, int32_t *inputs, int32_t *targets);

#endif
