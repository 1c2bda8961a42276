/* The loader's C API for Python (loader/python/ferry, through ctypes): flat arguments only (no
 * structs whose layout Python would have to mirror), checked here with one-line reasons, batches
 * lent out of the ring (or copied into the caller's buffers, or seen in place).
 * libferry_loader.so exports these functions and nothing else. Adding a function is compatible;
 * changing one bumps FERRY_PY_API_VERSION. */
#ifndef FERRY_PYAPI_H
#define FERRY_PYAPI_H

#include <stddef.h>
#include <stdint.h>

#define FERRY_PY_API_VERSION 1

struct ferry_py_loader;

int ferry_py_api_version(void);
/* Opens the loader as ferry train would (shuffle 1) or in file order (shuffle 0). The integers
 * are signed so that a negative or huge value from Python is refused by name here instead of
 * wrapping; 0 means the default for global_batch, block_bytes, window_blocks and nr_buffers, as in
 * struct loader_config. format: "auto", "llmc", "raw-u16", "raw-u32" or "megatron". 0, or
 * -errno with a one-line reason in err. */
int ferry_py_open(struct ferry_py_loader **out, const char *paths, const char *format,
	int64_t seq_len, int64_t batch, uint64_t seed, int shuffle, int64_t rank, int64_t world,
	int64_t global_batch, int64_t block_bytes, int64_t window_blocks, int64_t nr_buffers,
	char *err, size_t errlen);
void ferry_py_close(struct ferry_py_loader *p);
/* Copies the next batch's (B, T) inputs and targets into the caller's buffers (B * T int32
 * each) and says where it stands in the order. 0, or -errno (ferry_py_error says why). */
int ferry_py_next(struct ferry_py_loader *p, int32_t *inputs, int32_t *targets, uint64_t *epoch,
	uint64_t *position);
/* The next batch without a copy: inputs and targets point into the loader's ring, valid until
 * the next call of ferry_py_next, ferry_py_next_view, ferry_py_seek or ferry_py_close. */
int ferry_py_next_view(struct ferry_py_loader *p, const int32_t **inputs, const int32_t **targets,
	uint64_t *epoch, uint64_t *position);
/* Where the next batch stands: (epoch, position in global micro-batches). */
void ferry_py_state(struct ferry_py_loader *p, uint64_t *epoch, uint64_t *position);
int ferry_py_seek(struct ferry_py_loader *p, uint64_t epoch, uint64_t position);
uint64_t ferry_py_steps_per_epoch(const struct ferry_py_loader *p);
uint32_t ferry_py_vocab_size(const struct ferry_py_loader *p);
void ferry_py_order(const struct ferry_py_loader *p, uint32_t *block_bytes,
	uint32_t *window_blocks);
const char *ferry_py_path_name(const struct ferry_py_loader *p);
const char *ferry_py_error(const struct ferry_py_loader *p);
/* The i-th shard in the loader's order: its token file and, for Megatron, its .idx (else NULL),
 * as the loader opened them, so that Python fingerprints the files the order was built from.
 * -ENOENT past the last. The strings live as long as the loader. Added after version 1. */
int ferry_py_shard_files(const struct ferry_py_loader *p, uint32_t i, const char **path,
	const char **idx_path);

/* Added after version 1: batches lent out of the ring instead of copied (ferry's default). */
/* A buffer of one batch, 2 * B * T int32, to give ferry_py_next_lent as its spare; NULL when
 * out of memory. */
int32_t *ferry_py_buffer_new(const struct ferry_py_loader *p);
/* Frees a buffer of ferry_py_buffer_new or ferry_py_next_lent; NULL is a no-op. It needs no
 * loader: a buffer outlives the loader it came from. */
void ferry_py_buffer_free(int32_t *buf);
/* The next batch in a buffer of its own, without a copy: the ring's buffer the batch was read
 * into is taken out of the ring and returned in *buf (inputs, then targets at B * T: two
 * arrays that do not overlap), and spare (a buffer from ferry_py_buffer_new or an earlier
 * *buf, whose contents do not matter) takes its place. *buf is the caller's until it frees it
 * or passes it as a later spare: the loader never writes it again, and ferry_py_close leaves it
 * alone. 0, or -errno (ferry_py_error says why) with spare still the caller's. */
int ferry_py_next_lent(struct ferry_py_loader *p, int32_t *spare, int32_t **buf, uint64_t *epoch,
	uint64_t *position);

#endif
