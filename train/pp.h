/* train/: pipeline parallelism for the CPU trainer (issue 13): the model's layers split into P
 * stages over a pipeline group of ranks, the embedding on the first stage, the final layernorm,
 * the output projection and the loss on the last. A step's micro-batches (the gradient
 * accumulation's) run a 1F1B schedule; the residual stream goes forward and its gradient back
 * by point-to-point sends (comm.h's sendrecv). The tied wte lives on the first and the last
 * stage, its gradient summed between them before the optimizer. A stage may itself be split
 * over the grid's tensor group (model.h's gpt2_tp: the full 3D grid) and its optimizer state
 * over its data group (zero.h). Checkpoints stay one whole llm.c model file: pp_gather_array puts
 * the slices, shards and stages back together, pp_scatter takes a rank's part of a whole model.
 * train_cmd.c drives it; the result equals the 1-rank run. */
#ifndef FERRY_TRAIN_PP_H
#define FERRY_TRAIN_PP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loader/loader.h"
#include "train/comm.h"
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

/* One per process, fixed after pp_init except the activation slots' contents. */
struct pp {
	const struct grid *grid; /* the trainer's: its data and tensor groups */
	struct comm *pipe;       /* the grid's pipeline group: stage s is its rank s */
	int stage, nr_stages;
	int l0, l1;      /* this stage's layers [l0, l1) of the whole model's L */
	int full_layers; /* L */
	struct gpt2 *m;  /* the stage's model: l1 - l0 layers, the tensor rank's shards of them
			     * (wte, wpe, lnf allocated on every stage, used on the first (wte,
			     * wpe) and the last (wte, lnf)) */
	int B, T;
	/* Activations of the micro-batches in flight: at most P - stage on this stage under
	 * 1F1B (its warm-up forwards and one more before its first backward). Micro-batch i
	 * lives in slot i % nr_slots: the ones in flight are consecutive, so never two in one
	 * slot. Slot 0 is the model's own acts_memory; the others are nr_act_floats each: all of
	 * the activations on the last stage, on the others those up to residual3 (the head's,
	 * logits and probs of B*T*Vp floats each, never run there: their pointers in such a slot
	 * lead past its end and are never followed). */
	int nr_slots;
	float **slots;
	size_t nr_act_floats;
	/* the tokens of each micro-batch of the step (M, B, T): the first stage's backward needs
	 * the inputs again, the last stage's the targets */
	int32_t *inputs, *targets;
	int cap_micro;
	float *recv_fwd, *recv_bwd; /* (B, T, C): the stream and its gradient as received */
	/* per step, kept rather than allocated each time: wte's gradient from the other end
	 * ((Vp, C) on the first and the last stage, NULL elsewhere) and the stages' sums of
	 * squares of the norm (P doubles) */
	float *wte_other;
	double *norm_parts;
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
 * tensor group (gpt2_new_tp; NULL or size 1: whole). 0, or -EINVAL / -ENOMEM with one line in
 * err. */
int pp_init(struct pp *pp, const struct grid *g, const struct gpt2_tp *tp,
	const struct gpt2_config *full, int B, int T, char *err, size_t errlen);
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
/* The whole model's gradient norm (wte counted once), the same on every rank, from the
 * gradients zero_reduce_grads left (z: all of them, or at stage 2 the rank's slice): each
 * stage's sum of squares of what it counts (the slices' summed over the data group at stage 2,
 * the shards' over the tensor group, gpt2_tp_sum), then the stages' added in stage order. */
float pp_grad_norm(struct pp *pp, const struct zero *z);
/* AdamW on the parameters this stage uses (gpt2_update's arguments): all of them at ZeRO stage
 * 0, else those of the rank's slice with z's moments, then the slices all-gathered over the
 * data group (zero_update's way). */
void pp_update(struct pp *pp, const struct zero *z, const struct adamw_config *opt, float lr,
	float grad_scale, int t);
/* The loss of one batch, forward only, the same on every stage (evaluation). */
float pp_eval_loss(struct pp *pp, const int32_t *inputs, const int32_t *targets);
/* Stage 0: the measured bubble beside the theoretical (P - 1) / (M + P - 1), on f. */
void pp_report(const struct pp *pp, int nr_micro, FILE *f);

#endif
