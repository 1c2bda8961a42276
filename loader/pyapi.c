/* The Python binding's side of the loader (loader/pyapi.h): a thin layer over loader.h that
 * checks Python's integers, hands batches to arrays Python owns (buffers lent out of the ring,
 * or copies), and keeps every struct on this side. Python calls it through ctypes
 * (loader/python/ferry/_lib.py). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader/loader.h"
#include "loader/pyapi.h"

/* A loader and what Python's copies need of it. */
struct ferry_py_loader {
	struct loader *l;
	size_t batch_tokens; /* B * T: the size of inputs and of targets */
};

int ferry_py_api_version(void)
{
	return FERRY_PY_API_VERSION;
}

/* v in [lo, hi], else -EINVAL with a reason naming the argument as Python spells it. */
static int in_range(const char *name, int64_t v, int64_t lo, int64_t hi, char *err, size_t errlen)
{
	if (v >= lo && v <= hi)
		return 0;
	snprintf(err, errlen, "%s %lld: want %lld to %lld", name, (long long)v, (long long)lo,
		(long long)hi);
	return -EINVAL;
}

static int parse_format(const char *s, enum loader_format *f, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		enum loader_format f;
	} formats[] = {
		{ "auto", LOADER_FORMAT_AUTO },
		{ "llmc", LOADER_FORMAT_LLMC },
		{ "raw-u16", LOADER_FORMAT_RAW_U16 },
		{ "raw-u32", LOADER_FORMAT_RAW_U32 },
		{ "megatron", LOADER_FORMAT_MEGATRON },
	};

	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		if (!strcmp(s, formats[i].name)) {
			*f = formats[i].f;
			return 0;
		}
	}
	snprintf(err, errlen, "format %s: want auto, llmc, raw-u16, raw-u32 or megatron", s);
	return -EINVAL;
}

int ferry_py_open(struct ferry_py_loader **out, const char *paths, const char *format,
	int64_t seq_len, int64_t batch, uint64_t seed, int shuffle, int64_t rank, int64_t world,
	int64_t global_batch, int64_t block_bytes, int64_t window_blocks, int64_t nr_buffers,
	char *err, size_t errlen)
{
	struct loader_config cfg = { .device = -1 };
	struct ferry_py_loader *p;
	int ret;

	*out = NULL;
	if (!paths || !paths[0]) {
		snprintf(err, errlen, "no paths given");
		return -EINVAL;
	}
	ret = parse_format(format ? format : "auto", &cfg.format, err, errlen);
	/* Only what the config's fields cannot hold is refused here; the rest (a zero batch, a
	 * rank not below world, a global batch that is no multiple of batch x world, a block too
	 * large) is loader_open's to refuse, with the reasons ferry train and the tools give. */
	if (!ret)
		ret = in_range("seq_len", seq_len, 0, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("batch", batch, 0, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("world", world, 1, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("rank", rank, 0, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("global_batch", global_batch, 0, INT64_MAX, err, errlen);
	if (!ret)
		ret = in_range("block_bytes", block_bytes, 0, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("window_blocks", window_blocks, 0, UINT32_MAX, err, errlen);
	if (!ret)
		ret = in_range("buffers", nr_buffers, 0, UINT32_MAX, err, errlen);
	if (ret)
		return ret;
	cfg.paths = paths;
	cfg.seq_len = (uint32_t)seq_len;
	cfg.batch = (uint32_t)batch;
	cfg.seed = seed;
	cfg.shuffle = shuffle != 0;
	cfg.rank = (uint32_t)rank;
	cfg.world_size = (uint32_t)world;
	cfg.global_batch = (uint64_t)global_batch;
	cfg.block_bytes = (uint32_t)block_bytes;
	cfg.window_blocks = (uint32_t)window_blocks;
	cfg.nr_buffers = (uint32_t)nr_buffers;
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = loader_open(&p->l, &cfg, err, errlen);
	if (ret < 0) {
		free(p);
		return ret;
	}
	p->batch_tokens = (size_t)cfg.batch * cfg.seq_len;
	*out = p;
	return 0;
}

void ferry_py_close(struct ferry_py_loader *p)
{
	if (!p)
		return;
	loader_free(p->l);
	free(p);
}

int ferry_py_next(struct ferry_py_loader *p, int32_t *inputs, int32_t *targets, uint64_t *epoch,
	uint64_t *position)
{
	struct loader_batch b;
	size_t bytes;
	int ret;

	ret = loader_next_batch(p->l, &b);
	if (ret < 0)
		return ret;
	/* The ring's buffers are reused by the next call; Python's arrays outlive it. */
	bytes = p->batch_tokens * sizeof(int32_t);
	memcpy(inputs, b.inputs, bytes);
	memcpy(targets, b.targets, bytes);
	*epoch = b.state.epoch;
	*position = b.state.position;
	return 0;
}

int32_t *ferry_py_buffer_new(const struct ferry_py_loader *p)
{
	/* malloc: the loader frees the spares it took in with free() (loader_swap_batch_buffer). */
	return malloc(2 * p->batch_tokens * sizeof(int32_t));
}

void ferry_py_buffer_free(int32_t *buf)
{
	free(buf);
}

int ferry_py_next_lent(struct ferry_py_loader *p, int32_t *spare, int32_t **buf, uint64_t *epoch,
	uint64_t *position)
{
	const size_t n = p->batch_tokens;
	struct loader_batch b;
	int32_t *held;
	int ret;

	ret = loader_next_batch(p->l, &b);
	if (ret < 0)
		return ret;
	held = loader_swap_batch_buffer(p->l, spare);
	if (!held) {
		/* Never after a batch handed out; the copy would keep the promise all the same. */
		memcpy(spare, b.inputs, n * sizeof(int32_t));
		memcpy(spare + n, b.targets, n * sizeof(int32_t));
		held = spare;
	} else if (b.targets != held + n) {
		/* One run of B * T + 1 tokens (file order): targets are inputs shifted by one in
		 * the same memory. Python's two arrays are the caller's to write, so targets get
		 * their own half: a write to inputs must not change them. */
		memmove(held + n, b.targets, n * sizeof(int32_t));
	}
	*buf = held;
	*epoch = b.state.epoch;
	*position = b.state.position;
	return 0;
}

int ferry_py_next_view(struct ferry_py_loader *p, const int32_t **inputs, const int32_t **targets,
	uint64_t *epoch, uint64_t *position)
{
	struct loader_batch b;
	int ret;

	ret = loader_next_batch(p->l, &b);
	if (ret < 0)
		return ret;
	*inputs = b.inputs;
	*targets = b.targets;
	*epoch = b.state.epoch;
	*position = b.state.position;
	return 0;
}

void ferry_py_state(struct ferry_py_loader *p, uint64_t *epoch, uint64_t *position)
{
	struct loader_state st;

	loader_get_state(p->l, &st);
	*epoch = st.epoch;
	*position = st.position;
}

int ferry_py_seek(struct ferry_py_loader *p, uint64_t epoch, uint64_t position)
{
	struct loader_state st = { epoch, position };

	return loader_seek(p->l, &st);
}

uint64_t ferry_py_steps_per_epoch(const struct ferry_py_loader *p)
{
	return loader_steps_per_epoch(p->l);
}

uint32_t ferry_py_vocab_size(const struct ferry_py_loader *p)
{
	return loader_vocab_size(p->l);
}

void ferry_py_order(const struct ferry_py_loader *p, uint32_t *block_bytes, uint32_t *window_blocks)
{
	loader_get_order(p->l, block_bytes, window_blocks);
}

const char *ferry_py_path_name(const struct ferry_py_loader *p)
{
	return loader_path_name(p->l);
}

const char *ferry_py_error(const struct ferry_py_loader *p)
{
	return loader_last_error(p->l);
}

int ferry_py_shard_files(const struct ferry_py_loader *p, uint32_t i, const char **path,
	const char **idx_path)
{
	return loader_shard_files(p->l, i, path, idx_path);
}
