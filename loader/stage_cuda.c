/* CUDA staging backend: pinned host buffers (cudaHostAlloc) the readers fill, copied on a
 * dedicated copy stream into per-slot device buffers and widened to int32 there (widen.cu) on
 * a second stream, so the next batch's copy never queues behind this batch's widening; one
 * event per batch for the compute stream to wait on. Nothing on the batch path synchronises
 * the device. With device < 0 it stages into plain host memory. On the cufile path the reader
 * fills a slot's device buffer itself and widens it there (stage_widen_device). */
#include "config.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "loader/loader_i.h"

/* widen.cu */
int loader_widen_launch(const void *d_raw, uint32_t token_bytes, uint32_t batch, uint32_t seq_len,
	uint32_t row_stride, int32_t *d_inputs, int32_t *d_targets, cudaStream_t stream);

struct stage_slot {
	void *host;           /* raw tokens, pinned when device >= 0 */
	void *d_raw;          /* raw_bytes on the device */
	int32_t *d_inputs;    /* (B, T) */
	int32_t *d_targets;   /* (B, T) */
	cudaEvent_t copied;   /* recorded after the copy; the widening waits on it */
	cudaEvent_t done;     /* recorded after the widening; the reader waits on it */
	cudaEvent_t consumed; /* recorded by the consumer after its last read of the outputs;
				 * the next widening into them waits on it (never recorded: no wait) */
	bool uploaded;
	bool prestaged; /* cufile: the reader widened d_raw already (stage_widen_device) */
};

/* Immutable after stage_new, but for slot[i].uploaded: set by the consumer thread in
 * stage_upload and cleared by the reader in stage_reclaim, which the ring orders (a slot is
 * reclaimed only after the consumer released it); slot[i].prestaged likewise, set by the reader
 * that fills the slot and cleared by the consumer's stage_upload. */
struct stage {
	int device;
	uint32_t nr_slots;
	size_t raw_bytes;
	uint32_t batch, seq_len;
	cudaStream_t copy;  /* host-to-device copies, in batch order */
	cudaStream_t widen; /* widening kernels, each after its batch's copy */
	struct stage_slot *slots;
};

static int cuda_err(cudaError_t e, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(e));
	return -EIO;
}

int stage_new(struct stage **out, int device, uint32_t nr_slots, size_t raw_bytes, uint32_t batch,
	uint32_t seq_len, char *err, size_t errlen)
{
	struct stage *st = calloc(1, sizeof(*st));
	size_t out_bytes = (size_t)batch * seq_len * sizeof(int32_t);
	cudaError_t e;
	int ret = -ENOMEM;

	if (!st || !(st->slots = calloc(nr_slots, sizeof(*st->slots)))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	st->device = device;
	st->nr_slots = nr_slots;
	st->raw_bytes = raw_bytes;
	st->batch = batch;
	st->seq_len = seq_len;
	if (device >= 0) {
		e = cudaSetDevice(device);
		if (e != cudaSuccess) {
			cuda_err(e, "cudaSetDevice", err, errlen);
			ret = -ENODEV;
			goto fail;
		}
		e = cudaStreamCreateWithFlags(&st->copy, cudaStreamNonBlocking);
		if (e == cudaSuccess)
			e = cudaStreamCreateWithFlags(&st->widen, cudaStreamNonBlocking);
		if (e != cudaSuccess) {
			ret = cuda_err(e, "cudaStreamCreate", err, errlen);
			goto fail;
		}
	}
	for (uint32_t i = 0; i < nr_slots; i++) {
		struct stage_slot *s = &st->slots[i];

		if (device < 0) {
			if (posix_memalign(&s->host, 4096, raw_bytes) != 0) {
				s->host = NULL;
				snprintf(err, errlen, "out of memory for staging");
				goto fail;
			}
			continue;
		}
		/* cudaHostAlloc returns page-aligned memory, as O_DIRECT reads need. */
		if ((e = cudaHostAlloc(&s->host, raw_bytes, cudaHostAllocDefault)) != cudaSuccess ||
			(e = cudaMalloc(&s->d_raw, raw_bytes)) != cudaSuccess ||
			(e = cudaMalloc((void **)&s->d_inputs, out_bytes)) != cudaSuccess ||
			(e = cudaMalloc((void **)&s->d_targets, out_bytes)) != cudaSuccess ||
			(e = cudaEventCreateWithFlags(&s->copied, cudaEventDisableTiming)) !=
				cudaSuccess ||
			(e = cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming)) !=
				cudaSuccess ||
			(e = cudaEventCreateWithFlags(&s->consumed, cudaEventDisableTiming)) !=
				cudaSuccess) {
			ret = cuda_err(e, "allocating staging buffers", err, errlen);
			goto fail;
		}
	}
	*out = st;
	return 0;
fail:
	stage_free(st);
	return ret;
}

void stage_free(struct stage *st)
{
	if (!st)
		return;
	if (st->device >= 0 && st->copy)
		cudaStreamSynchronize(st->copy);
	if (st->device >= 0 && st->widen)
		cudaStreamSynchronize(st->widen);
	for (uint32_t i = 0; st->slots && i < st->nr_slots; i++) {
		struct stage_slot *s = &st->slots[i];

		if (st->device < 0) {
			free(s->host);
			continue;
		}
		if (s->host)
			cudaFreeHost(s->host);
		cudaFree(s->d_raw);
		cudaFree(s->d_inputs);
		cudaFree(s->d_targets);
		if (s->copied)
			cudaEventDestroy(s->copied);
		if (s->done)
			cudaEventDestroy(s->done);
		if (s->consumed)
			cudaEventDestroy(s->consumed);
	}
	if (st->copy)
		cudaStreamDestroy(st->copy);
	if (st->widen)
		cudaStreamDestroy(st->widen);
	free(st->slots);
	free(st);
}

void *stage_host_buffer(struct stage *st, uint32_t slot)
{
	return st->slots[slot].host;
}

int stage_upload(struct stage *st, uint32_t slot, uint32_t token_bytes, uint32_t row_stride,
	struct loader_batch *b)
{
	struct stage_slot *s = &st->slots[slot];
	size_t bytes = ((size_t)(st->batch - 1) * row_stride + st->seq_len + 1) * token_bytes;
	cudaError_t e;

	b->d_inputs = b->d_targets = NULL;
	b->ready_event = b->consumed_event = NULL;
	if (st->device < 0)
		return 0;
	if (s->prestaged) {
		/* cufile: the reader put the rows on the device and widened them already. */
		s->prestaged = false;
		goto out;
	}
	e = cudaMemcpyAsync(s->d_raw, s->host, bytes, cudaMemcpyHostToDevice, st->copy);
	if (e != cudaSuccess)
		return -EIO;
	/* The consumer may still be copying this slot's previous batch out of the outputs: the
	 * widening waits for that too. */
	if (cudaEventRecord(s->copied, st->copy) != cudaSuccess ||
		cudaStreamWaitEvent(st->widen, s->copied, 0) != cudaSuccess ||
		cudaStreamWaitEvent(st->widen, s->consumed, 0) != cudaSuccess)
		return -EIO;
	if (loader_widen_launch(s->d_raw, token_bytes, st->batch, st->seq_len, row_stride,
		    s->d_inputs, s->d_targets, st->widen) != 0)
		return -EIO;
	/* done follows the copy too (through copied), so waiting on it frees the host buffer,
	 * d_raw and the outputs of this slot at once. */
	if (cudaEventRecord(s->done, st->widen) != cudaSuccess)
		return -EIO;
out:
	s->uploaded = true;
	b->d_inputs = s->d_inputs;
	b->d_targets = s->d_targets;
	b->ready_event = (void *)s->done;
	b->consumed_event = (void *)s->consumed;
	return 0;
}

void *stage_device_buffer(struct stage *st, uint32_t slot)
{
	return st->device < 0 ? NULL : st->slots[slot].d_raw;
}

int stage_widen_device(struct stage *st, uint32_t slot, void *stream, uint32_t token_bytes,
	uint32_t row_stride, int32_t *h_inputs, int32_t *h_targets)
{
	struct stage_slot *s = &st->slots[slot];
	cudaStream_t cs = (cudaStream_t)stream;
	size_t out_bytes = (size_t)st->batch * st->seq_len * sizeof(int32_t);

	if (st->device < 0)
		return -ENOSYS;
	/* The reader thread issues this; the runtime's current device is per thread. */
	if (cudaSetDevice(st->device) != cudaSuccess ||
		cudaStreamWaitEvent(cs, s->consumed, 0) != cudaSuccess ||
		loader_widen_launch(s->d_raw, token_bytes, st->batch, st->seq_len, row_stride,
			s->d_inputs, s->d_targets, cs) != 0 ||
		cudaEventRecord(s->done, cs) != cudaSuccess)
		return -EIO;
	/* The loader's contract keeps host tokens in every batch (the trainer checks them), so
	 * the widened batch comes back once; the file bytes themselves never touch host memory.
	 * The reader waits here, never the trainer. */
	if (cudaMemcpyAsync(h_inputs, s->d_inputs, out_bytes, cudaMemcpyDeviceToHost, cs) !=
			cudaSuccess ||
		cudaMemcpyAsync(h_targets, s->d_targets, out_bytes, cudaMemcpyDeviceToHost, cs) !=
			cudaSuccess ||
		cudaStreamSynchronize(cs) != cudaSuccess)
		return -EIO;
	s->prestaged = true;
	return 0;
}

int stage_reclaim(struct stage *st, uint32_t slot)
{
	struct stage_slot *s = &st->slots[slot];

	/* The reader thread waits here, never the trainer: the host buffer is reused only once
	 * its copy to the device has finished. */
	if (st->device < 0 || !s->uploaded)
		return 0;
	s->uploaded = false;
	return cudaEventSynchronize(s->done) == cudaSuccess ? 0 : -EIO;
}

const char *stage_name(void)
{
	return "cuda";
}
