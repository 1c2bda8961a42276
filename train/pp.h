/* train/: pipeline parallelism (issue 13) on CPU or GPU ranks: the model's layers split into P
 * stages over a pipeline group of ranks, the embedding on the first stage, the final layernorm,
 * the output projection and the loss on the last. A step's micro-batches (the gradient
 * accumulation's) run a 1F1B schedule; the residual stream goes forward and its gradient back
 * by point-to-point sends (comm.h's sendrecv). The tied wte lives on the first and the last
 * stage, its gradient summed between them before the optimizer. A stage may itself be split
 * over the grid's tensor group (model.h's gpt2_tp: the full 3D grid) and its optimizer state
 * over its data group (zero.h). Checkpoints stay one whole llm.c model file: pp_gather_array puts
 * the slices, shards and stages back together, pp_scatter takes a rank's part of a whole model.
 * train_cmd.c drives it; the result equals the 1-rank run. The schedule is written once: a
 * stage's work is behind struct pp_stage_ops, the CPU's (model.h) or the GPU's (gpt_cuda.h). */
#ifndef FERRY_TRAIN_PP_H
#define FERRY_TRAIN_PP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loader/loader.h"
#include "train/comm.h"
#include "train/gpt_cuda.h"
#include "train/grid.h"
#include "train/model.h"
#include "train/zero.h"

/* The bubble as measured: time a stage waited in its sends and receives during the schedule
 * (idle) against the schedule's wall time (total), summed over the steps. */
struct pp_bubble {
	double idle_ms, total_ms; /* this stage's, summed over steps */
	double mean_frac_sum;     /* sum over steps of the mean over stages of idle/total */
	int nr_steps;
};

struct pp;

/* What a stage does on its own device, under the one 1F1B schedule of pp_forward_backward (the
 * sends, receives, their order and the bubble's timing are the schedule's, the same for every
 * backend): the CPU stage of pp.c (model.h, host buffers) or the GPU stage (gpt_cuda.h, device
 * buffers sent by NCCL). Micro-batch i's activations are its slot's (i % nr_slots). */
struct pp_stage_ops {
	const char *name;
	void (*zero_grad)(struct pp *pp);
	/* micro-batch i's forward from the embedding (first stage) or from recv_fwd, through the
	 * stage's blocks and, on the last stage, the head; b's tokens kept for its backward */
	void (*forward)(struct pp *pp, int i, const struct loader_batch *b);
	/* micro-batch i's backward, adding to the stage's gradients, from the loss (last stage)
	 * or from recv_bwd; the embedding's on the first stage */
	void (*backward)(struct pp *pp, int i, float loss_scale);
	/* after forward: the stream leaving the stage; after backward: the gradient of the
	 * stream that entered it (stream_bytes each) */
	const void *(*stream_out)(struct pp *pp);
	const void *(*grad_out)(struct pp *pp);
	/* the stage's queued work done (NULL: nothing is ever queued, the CPU's): called before
	 * a transfer, so that its time is the wait alone, and after it, so that its buffers are
	 * free again */
	void (*drain)(struct pp *pp);
	/* the last stage, after the schedule: the mean loss of its nr_micro micro-batches */
	float (*mean_loss)(struct pp *pp, int nr_micro);
	/* the last stage, after an evaluation's forward: that batch's loss */
	float (*eval_loss)(struct pp *pp);
	/* the first and the last stage: wte's gradient summed with the peer's (the other end) */
	void (*exchange_wte)(struct pp *pp, int peer);
	/* the gradients summed over the data group (zero_reduce_grads' way on the CPU) */
	void (*reduce_grads)(struct pp *pp, struct zero *z);
	/* this stage's share of the whole model's squared gradient norm (pp_grad_norm) */
	double (*sum_squares)(struct pp *pp, const struct zero *z);
	/* pp_update's AdamW on the stage's parameters; norm the whole model's */
	void (*update)(struct pp *pp, const struct zero *z, const struct adamw_config *opt,
		float lr, float grad_scale, float norm, int t);
};

/* One per process, fixed after pp_init except the activation slots' contents. */
struct pp {
	const struct grid *grid; /* the trainer's: its data and tensor groups */
	struct comm *pipe;       /* the grid's pipeline group: stage s is its rank s */
	int stage, nr_stages;
	int l0, l1;      /* this stage's layers [l0, l1) of the whole model's L */
	int full_layers; /* L */
	struct gpt2 *m;  /* the stage's model: l1 - l0 layers, the tensor rank's shards of them
			     * (wte, wpe, lnf allocated on every stage, used on the first (wte,
			     * wpe) and the last (wte, lnf)); on a GPU stage its weights and
			     * moments only, the home gpt2_cuda_store fills for checkpoints */
	int B, T;
	const struct pp_stage_ops *ops; /* the CPU's, or the GPU's after pp_use_gpu */
	struct gpt2_cuda *gpu;          /* the GPU stage (pp_use_gpu); NULL on the CPU */
	/* Activations of the micro-batches in flight: at most P - stage on this stage under
	 * 1F1B (its warm-up forwards and one more before its first backward). Micro-batch i
	 * lives in slot i % nr_slots: the ones in flight are consecutive, so never two in one
	 * slot. Slot 0 is the model's own acts_memory; the others are nr_act_floats each: all of
	 * the activations on the last stage, on the others those up to residual3 (the head's,
	 * logits and probs of B*T*Vp floats each, never run there: their pointers in such a slot
	 * lead past its end and are never followed). A GPU stage keeps its slots on the device
	 * (gpt2_cuda_pp_stage); none here. */
	int nr_slots;
	float **slots;
	size_t nr_act_floats;
	/* the tokens of each micro-batch of the step (M, B, T): the first stage's backward needs
	 * the inputs again, the last stage's the targets */
	int32_t *inputs, *targets;
	int cap_micro;
	/* (B, T, C) of stream_bytes: the stream and its gradient as received; host memory on the
	 * CPU, device memory (in the activations' type) on a GPU stage */
	void *recv_fwd, *recv_bwd;
	size_t stream_bytes;
	/* per step, kept rather than allocated each time: wte's gradient from the other end
	 * ((Vp, C) on the first and the last stage of the CPU, NULL elsewhere: a GPU stage keeps
	 * its own on the device) and the stages' sums of squares of the norm (P doubles) */
	float *wte_other;
	double *norm_parts;
	double loss_sum; /* the CPU's last stage: its micro-batches' losses in the step */
	struct pp_bubble bubble;
	double idle_ms; /* of the running step */
};

/* Layers [*l0, *l1) of stage of P over L layers: L / P each, the first L % P stages one more
 * (the last stage also runs the head, the largest matmul at GPT-2's vocabulary). */
void pp_split(int nr_layers, int nr_stages, int stage, int *l0, int *l1);

/* What a pipeline of P stages does not combine with yet (the grid, grid_check, checks the
 * rest: P against the ranks and the layers): overlapped buckets, --sample. Tensor parallelism
 * and ZeRO stages 1 and 2 combine. 0, or -EINVAL with one line in err. */
int pp_check_layout(int nr_stages, int overlap, int sample, char *err, size_t errlen);

/* The stage of this rank (g->p) of a model of config full for (B, T) micro-batches, on g's
 * pipeline group: its ranks are the stages, in order, and its sendrecv, allreduce_sum and
 * allgather are called with them (the world's comm where the pipeline is the whole world, else
 * a communicator of one pipeline, of one (d, t): tensor rank t of a stage sends to tensor rank t
 * of the next, the residual stream being whole on each). tp: the stage's blocks split over g's
 * tensor group (gpt2_new_tp; NULL or size 1: whole). gpu_model: the stage will train on the
 * GPU (pp_use_gpu): pp->m holds weights and moments only, and no host activation slots are
 * made. 0, or -EINVAL / -ENOMEM with one line in err. */
int pp_init(struct pp *pp, const struct grid *g, const struct gpt2_tp *tp,
	const struct gpt2_config *full, int B, int T, bool gpu_model, char *err, size_t errlen);
/* The stage on the GPU (after pp_scatter, pp_trim_whole and zero_init): its weights and
 * moments uploaded from pp->m, P - stage activation sets there, recv buffers on the device,
 * the same schedule run with the GPU's stage ops; transfers go over the pipeline group's
 * sendrecv on device buffers (NCCL). pp_init left out the host's activation slots
 * (gpu_model). Not with tensor parallelism, ZeRO 1 and 2 nor CUDA graphs (train_cmd.c refuses
 * those first). 0, or -EINVAL with one line in err. */
int pp_use_gpu(struct pp *pp, const struct gpt2_cuda_opts *o, char *err, size_t errlen);
/* A GPU stage's weights and moments back into pp->m (before a checkpoint); nothing on the
 * CPU. */
void pp_store(struct pp *pp);
void pp_done(struct pp *pp);

/* This stage's parameters and AdamW moments from full, a whole model (read from a checkpoint,
 * --init, or drawn; every rank holds the same; gpt2_new_whole's): its layers, and of them its
 * tensor rank's shards (ckpt_tp_scatter). Moments full does not hold (a new run's, NULL) stay
 * the stage's zeros. Local copies only; before zero_init slices the moments. */
void pp_scatter(struct pp *pp, const struct gpt2 *full);
/* After pp_scatter: frees full's parameters and moments (gpt2_new_whole's) on every rank: a
 * checkpoint is gathered one array at a time (pp_gather_array), not into a whole model kept
 * for it. The struct stays (config and sizes), its pointers NULL. */
void pp_trim_whole(const struct pp *pp, struct gpt2 *full);
/* One array of the whole model (ckpt.h's ckpt_array: the first moments, the second, the
 * parameters) into full (the whole model's flat layout, gpt2_param_sizes) on the world's rank 0,
 * the checkpoint writer, NULL elsewhere, in three steps: under ZeRO (z) the stage's slices
 * onto data rank 0 of its data group, its tensor shards onto tensor rank 0 (ckpt_tp_gather),
 * then the stages over the pipeline group of data 0, tensor 0. Every rank calls it for each
 * array in ckpt_array's order: rank 0 through ckpt_save_fetched (pp_fetch_array, arg a struct
 * pp_fetch), the others itself. */
void pp_gather_array(struct pp *pp, const struct zero *z, int what, float *full);
struct pp_fetch {
	struct pp *pp;
	const struct zero *z;
};
int pp_fetch_array(void *arg, int what, float *full, char *err, size_t errlen);

/* Gives the next micro-batch of the step (the loader's, checked): every stage reads the same
 * samples, in the same order. */
typedef void (*pp_next_batch_fn)(void *arg, struct loader_batch *b);

/* One step's forward and backward of nr_micro micro-batches under 1F1B, the gradients of each
 * scaled by loss_scale and added up (zeroed first), wte's summed between the first and last
 * stage. Returns the mean loss over the micro-batches, the same on every stage. */
float pp_forward_backward(struct pp *pp, int nr_micro, pp_next_batch_fn next, void *arg,
	float loss_scale);
/* The stage's gradients of the step summed over its data group (train_cmd.c's step, between
 * pp_forward_backward and pp_grad_norm): zero_reduce_grads on the CPU, on the device on GPUs. */
void pp_reduce_grads(struct pp *pp, struct zero *z);
/* The whole model's gradient norm (wte counted once), the same on every rank, from the
 * gradients zero_reduce_grads left (z: all of them, or at stage 2 the rank's slice): each
 * stage's sum of squares of what it counts (the slices' summed over the data group at stage 2,
 * the shards' over the tensor group, gpt2_tp_sum), then the stages' added in stage order. */
float pp_grad_norm(struct pp *pp, const struct zero *z);
/* AdamW on the parameters this stage uses (gpt2_update's arguments): all of them at ZeRO stage
 * 0, else those of the rank's slice with z's moments, then the slices all-gathered over the
 * data group (zero_update's way). norm: pp_grad_norm's (the GPU's AdamW reads it there). */
void pp_update(struct pp *pp, const struct zero *z, const struct adamw_config *opt, float lr,
	float grad_scale, float norm, int t);
/* The loss of batch b, forward only, the same on every stage (evaluation). */
float pp_eval_loss(struct pp *pp, const struct loader_batch *b);
/* Stage 0: the measured bubble beside the theoretical (P - 1) / (M + P - 1), on f. */
void pp_report(const struct pp *pp, int nr_micro, FILE *f);

#endif
