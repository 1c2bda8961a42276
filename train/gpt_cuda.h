/* train/: the GPU trainer behind `ferry train --device cuda`: the model of model.h on one GPU
 * (bf16 or fp32 weights and activations, fp32 master weights, moments and gradients) built from
 * kernels/. A backend is a file: gpt_cuda.cu when built with CUDA, gpt_cuda_none.c otherwise.
 * The host struct gpt2 stays the home of the weights for checkpoints and sampling:
 * gpt2_cuda_new uploads them, gpt2_cuda_store brings them back. */
#ifndef FERRY_TRAIN_GPT_CUDA_H
#define FERRY_TRAIN_GPT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "loader/loader.h"
#include "train/comm.h"
#include "train/model.h"
#include "train/zero.h"

#ifdef __cplusplus
extern "C" {
#endif

struct gpt2_cuda_opts {
	int device;     /* CUDA device ordinal */
	int bf16;       /* 1: bf16 weights/activations/matmuls; 0: fp32 throughout (checks) */
	int cuda_graph; /* capture each micro-step and the update in CUDA graphs */
	/* ZeRO (zero.h), the trainer's, after zero_init; NULL or stage 0: every GPU keeps the
	 * whole. At stage 1 and 2 the GPU keeps AdamW's m and v of the rank's slice only (taken
	 * from zero->m and v, given back there by gpt2_cuda_store), updates that slice and
	 * all-gathers the fp32 master weights; stage 2 also reduce-scatters the gradients. The
	 * master weights and gradients stay whole (padded to world_size * slice). */
	struct zero *zero;
	/* The ranks' comm (NULL: one process): where it has a sync (NCCL), every host wait for the
	 * GPU goes through it, so that a collective a dead peer never joins ends the run with one
	 * line after --comm-timeout instead of hanging in cudaStreamSynchronize. */
	struct comm *comm;
	/* Tensor parallelism (host->tp.size > 1, host a gpt2_new_tp model holding this rank's
	 * shards, whose layout the GPU keeps): the tensor group's comm (NCCL: its allreduce_sum
	 * and allreduce_sum_bf16 on device buffers), and the data group's, over which the
	 * gradients are reduced (gpt2_cuda_update's comm) and --overlap's buckets run. NULL: no
	 * groups, comm is the data group (the 1-D layouts). */
	struct comm *tensor, *data;
};

struct gpt2_cuda;

/* 0 when this build can train on a GPU and one is present; else -ENODEV or -ENOSYS with the
 * reason in err. */
int gpt2_cuda_available(char *err, size_t errlen);
/* The GPU of this process: its local rank under any launcher (launch.h) modulo the devices,
 * else 0. The trainer, the loader and NCCL all use this one. */
int gpt2_cuda_local_device(void);

/* A GPU copy of host's parameters and Adam moments for micro-batches of (B, T). NULL with the
 * reason in err on an unsupported shape (C, Vp multiples of 8; head size 16/32/64/128), and
 * under tensor parallelism without an NCCL tensor group or with cuda_graph. */
struct gpt2_cuda *gpt2_cuda_new(const struct gpt2 *host, int B, int T,
	const struct gpt2_cuda_opts *o, char *err, size_t errlen);
void gpt2_cuda_free(struct gpt2_cuda *g);
/* Master weights and moments back into host (waits for the GPU); at ZeRO stage 1 and 2 the
 * moments of the slice into the zero's m and v. */
void gpt2_cuda_store(struct gpt2_cuda *g, struct gpt2 *host);
/* Device bytes this rank holds for the training state (activations aside): the fp32 master
 * weights and the bf16 copy, the fp32 gradients, AdamW's moments (a slice at ZeRO 1 and 2). */
void gpt2_cuda_memory(const struct gpt2_cuda *g, struct zero_memory *mem);

/* A training step: zero_grad, micro_step per micro-batch, update, then step_result, the one
 * place the host waits for the GPU. */
void gpt2_cuda_zero_grad(struct gpt2_cuda *g);
/* Forward and backward of batch b (its staged device copy when the loader made one, after its
 * ready_event; else its host tokens); adds the batch's mean loss to the step's. */
void gpt2_cuda_micro_step(struct gpt2_cuda *g, const struct loader_batch *b, float loss_scale);
/* Before the last micro_step of a step, with --overlap (the zero's overlap, given as
 * gpt2_cuda_opts.zero) over NCCL: that backward starts zero.c's buckets on the comm's side
 * stream as their gradients become final, and update waits for them instead of reducing after
 * backward. Nothing otherwise, nor with --cuda-graph (a replayed graph makes no host calls). */
void gpt2_cuda_reduce_begin(struct gpt2_cuda *g);
/* Sums gradients over comm (the data group; NCCL on the device; other backends through host
 * memory), the global norm and clipping factor on the device (under tensor parallelism the
 * whole model's: the shards' squares summed over the tensor group, the replicated tensors'
 * counted once), and AdamW at step t (from 1). At ZeRO stage 1
 * the update is of the rank's slice, then the master weights are all-gathered; stage 2
 * reduce-scatters the gradients instead of all-reducing them, and the norm is each slice's sum
 * of squares plus one all-reduce of that scalar. The collectives run outside the CUDA graph. The step's
 * hyperparameters go through one pinned host buffer that the queued copy reads when it runs:
 * step_result must come before the next update. */
void gpt2_cuda_update(struct gpt2_cuda *g, struct comm *comm, const struct adamw_config *opt,
	float lr, float grad_clip, int t);
/* After step_result: the last step's reduction timed on the GPU's stream into the zero's stats
 * (gpt2_cuda_opts.zero; zeros where nothing was reduced), as zero_reduce_grads fills them on the
 * CPU: exposed_ms the time the stream stood waiting for it after backward (all of the single
 * collective's), inflight_ms from the first bucket's gradients being final to the end of that
 * wait, nr_buckets (1: the single collective). */
void gpt2_cuda_reduce_stats(struct gpt2_cuda *g);
/* Waits for the step; returns this rank's mean loss over its accum micro-steps and sets *norm
 * to the gradient norm (of the mean over ranks, before clipping). */
float gpt2_cuda_step_result(struct gpt2_cuda *g, int accum, float *norm);
/* Mean loss of batch b, forward only (waits). */
float gpt2_cuda_eval(struct gpt2_cuda *g, const struct loader_batch *b);

/* FERRY_TRAIN_PROFILE: from now on the GPU time of each layer kind (enum gpt2_prof; the residual
 * adds are fused into the layernorms, the GELU into the fc matmul, the softmax and its gradient
 * count as "bwd softmax+xent") is added to secs[kind] at each point the host waits. -1 with
 * CUDA graphs: a replayed graph has no events inside. */
int gpt2_cuda_profile(struct gpt2_cuda *g, double *secs);

/* A pipeline stage (pp.h's GPU stage ops; g made by gpt2_cuda_new from the stage's host model
 * of its layers, at ZeRO stage 0, without tensor parallelism or CUDA graphs): first runs the
 * embedding, last the final layernorm, the head and the loss; the others take the stream from
 * the previous stage and give its gradient back. nr_slots activation sets (the micro-batches in
 * flight under 1F1B, P - stage), micro-batch i in slot i % nr_slots with its tokens. 0, or
 * -EINVAL with one line in err. */
int gpt2_cuda_pp_stage(struct gpt2_cuda *g, int first, int last, int nr_slots, char *err,
	size_t errlen);
/* The device buffers the stream (grad 0) and its gradient (grad 1) are received into, of
 * gpt2_cuda_pp_stream_bytes each: (B, T, C) in the activations' type. */
void *gpt2_cuda_pp_recv(struct gpt2_cuda *g, int grad);
size_t gpt2_cuda_pp_stream_bytes(const struct gpt2_cuda *g);
/* Micro-batch i's forward: from the embedding of b's tokens, or from stream_in (device); the
 * tokens kept in its slot (the first stage's backward and the last's loss read them). */
void gpt2_cuda_pp_forward(struct gpt2_cuda *g, int i, const struct loader_batch *b,
	const void *stream_in);
/* Micro-batch i's backward, adding to the gradients: from its loss (added to the step's, read
 * by gpt2_cuda_step_result) on the last stage, else from grad_in (device). */
void gpt2_cuda_pp_backward(struct gpt2_cuda *g, int i, const void *grad_in, float loss_scale);
/* After forward: the stream leaving the stage (the slot's last residual); after backward: the
 * gradient of the stream that entered it. Device memory, valid until the next call. */
const void *gpt2_cuda_pp_stream_out(struct gpt2_cuda *g);
const void *gpt2_cuda_pp_grad_out(struct gpt2_cuda *g);
/* The host waits for the stage's stream, on which pipe's transfers are enqueued (pipe's
 * cuda_stream is set to it first), through the comm's deadline. */
void gpt2_cuda_pp_sync(struct gpt2_cuda *g, struct comm *pipe);
/* The last stage after a forward: the batch's mean loss (waits). */
float gpt2_cuda_pp_eval_loss(struct gpt2_cuda *g);
/* The first and the last stage: wte's gradient sent to peer over pipe while the peer's is
 * received, then added (both ends hold the same sum). */
void gpt2_cuda_pp_exchange_wte(struct gpt2_cuda *g, struct comm *pipe, int peer);
/* The gradients summed over the data group (gpt2_cuda_opts.data) when it has more than one
 * rank; the update divides by its size. */
void gpt2_cuda_pp_reduce(struct gpt2_cuda *g);
/* The stage's share of the squared norm of the mean gradient (waits): its gradients, wte's
 * only where count_wte (the first stage: the tied wte counts once). */
double gpt2_cuda_pp_sum_squares(struct gpt2_cuda *g, int count_wte);
/* AdamW at step t on the tensors the stage uses, the gradients times grad_scale (the clipping
 * factor of the whole model's norm, given, as pp.h computes it over the stages). */
void gpt2_cuda_pp_update(struct gpt2_cuda *g, const struct adamw_config *opt, float lr,
	float grad_scale, float norm, int t);

/* For tests (tests/gpu/): the pieces of a step on host tokens, and the tensors to compare. */
void gpt2_cuda_set_tokens(struct gpt2_cuda *g, const int32_t *inputs, const int32_t *targets);
void gpt2_cuda_forward(struct gpt2_cuda *g);
void gpt2_cuda_backward(struct gpt2_cuda *g, float loss_scale);
void gpt2_cuda_copy_logits(struct gpt2_cuda *g, float *out); /* (B,T,Vp), after forward */
void gpt2_cuda_copy_grads(struct gpt2_cuda *g, float *out);  /* nr_params, fp32 */

#ifdef __cplusplus
}
#endif

#endif
