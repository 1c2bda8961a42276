/* train/: the GPT-2 model of the CPU trainer: parameters in llm.c's order, the forward and
 * backward passes built from layers.h, AdamW, gradient clipping and the learning-rate schedule.
 * The trainer (train_cmd.c) feeds it batches; ckpt.c saves and loads it. */
#ifndef FERRY_TRAIN_MODEL_H
#define FERRY_TRAIN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gpt2_config {
	int max_seq_len;       /* maxT: rows of wpe */
	int vocab_size;        /* V: real tokens */
	int padded_vocab_size; /* Vp: V rounded up to a multiple of 128 (256 stays 256) */
	int nr_layers;         /* L */
	int nr_heads;          /* NH; C % NH == 0 */
	int channels;          /* C */
};

#define GPT2_NR_PARAM_TENSORS 16

/* Tensor parallelism as in Megatron-LM: T ranks each hold a shard of every block's matmuls.
 * Column-parallel (the output rows split): qkvw/qkvb take the rank's heads' rows of each of q, k
 * and v (3 * C/T rows, q's then k's then v's), fcw/fcb the rank's 4C/T rows. Row-parallel (the
 * input columns split): attprojw (C, C/T) and fcprojw (C, 4C/T) the matching columns, their
 * outputs partial sums that one all-reduce adds up; their biases are added once, after it.
 * Replicated, the same bits on every rank: wte, wpe, the layernorms, attprojb, fcprojb, lnfw,
 * lnfb (the vocabulary is small here: replicating it costs no communication at all). Forward
 * all-reduces the outputs of attproj and fcproj, backward the input gradients of the qkv and fc
 * matmuls (Megatron's g and f): four all-reduces of (B, T, C) per block and micro-batch. size 1
 * (or a zeroed struct): the whole model, no call. */
struct gpt2_tp {
	int size, rank; /* T and this rank's t in [0, T) */
	/* buf (n) = the sum over the tensor group of buf, the same bits on each of its ranks */
	void (*allreduce_sum)(void *arg, float *buf, size_t n);
	void *arg;
};

/* The parameters (and, with the same layout, their gradients and the Adam moments), one
 * contiguous block in the order of llm.c's model files. */
struct gpt2_params {
	float *wte;      /* (Vp, C) token embedding, tied with the output projection */
	float *wpe;      /* (maxT, C) */
	float *ln1w;     /* (L, C) */
	float *ln1b;     /* (L, C) */
	float *qkvw;     /* (L, 3*C, C) */
	float *qkvb;     /* (L, 3*C) */
	float *attprojw; /* (L, C, C) */
	float *attprojb; /* (L, C) */
	float *ln2w;     /* (L, C) */
	float *ln2b;     /* (L, C) */
	float *fcw;      /* (L, 4*C, C) */
	float *fcb;      /* (L, 4*C) */
	float *fcprojw;  /* (L, C, 4*C) */
	float *fcprojb;  /* (L, C) */
	float *lnfw;     /* (C) */
	float *lnfb;     /* (C) */
};

#define GPT2_NR_ACT_TENSORS 23

/* Activations of one micro-batch (B, T) saved for backward; the gradient of each has the same
 * layout. */
struct gpt2_acts {
	float *encoded;   /* (B, T, C) */
	float *ln1;       /* (L, B, T, C) */
	float *ln1_mean;  /* (L, B, T) */
	float *ln1_rstd;  /* (L, B, T) */
	float *qkv;       /* (L, B, T, 3*C) */
	float *atty;      /* (L, B, T, C) */
	float *att;       /* (L, B, NH, T, T) */
	float *attproj;   /* (L, B, T, C) */
	float *residual2; /* (L, B, T, C) */
	float *ln2;       /* (L, B, T, C) */
	float *ln2_mean;  /* (L, B, T) */
	float *ln2_rstd;  /* (L, B, T) */
	float *fch;       /* (L, B, T, 4*C) */
	float *fch_gelu;  /* (L, B, T, 4*C) */
	float *fcproj;    /* (L, B, T, C) */
	float *residual3; /* (L, B, T, C) */
	float *lnf;       /* (B, T, C) */
	float *lnf_mean;  /* (B, T) */
	float *lnf_rstd;  /* (B, T) */
	float *logits;    /* (B, T, Vp) */
	float *probs;     /* (B, T, Vp) */
	float *losses;    /* (B, T) */
	float *scratch;   /* (B, T): dlosses in backward */
};

struct adamw_config {
	float beta1, beta2, eps, weight_decay;
};

/* Where a step's time goes, per layer kind (forward F_, backward B_), when gpt2.profile is set:
 * `FERRY_TRAIN_PROFILE=1 ferry train ...` prints the table at the end of the run. */
enum gpt2_prof {
	PROF_F_ENCODER,
	PROF_F_LAYERNORM,
	PROF_F_QKV,
	PROF_F_ATTENTION,
	PROF_F_ATTPROJ,
	PROF_F_FC,
	PROF_F_GELU,
	PROF_F_FCPROJ,
	PROF_F_RESIDUAL,
	PROF_F_LMHEAD,
	PROF_F_SOFTMAX,
	PROF_B_ZERO,
	PROF_B_SOFTMAX,
	PROF_B_LMHEAD,
	PROF_B_LAYERNORM,
	PROF_B_RESIDUAL,
	PROF_B_FCPROJ,
	PROF_B_GELU,
	PROF_B_FC,
	PROF_B_ATTPROJ,
	PROF_B_ATTENTION,
	PROF_B_QKV,
	PROF_B_ENCODER,
	GPT2_NR_PROF
};
extern const char *const gpt2_prof_names[GPT2_NR_PROF];

/* A model and its training state. params/grads/m/v each point into one block of nr_params
 * floats; acts/grad_acts are sized for micro-batches of (B, T) given to gpt2_new. */
struct gpt2 {
	struct gpt2_config config;
	struct gpt2_tp tp; /* size 1: the whole model; else param_sizes are the rank's shards */
	size_t param_sizes[GPT2_NR_PARAM_TENSORS];
	size_t nr_params;
	struct gpt2_params params, grads;
	float *params_memory, *grads_memory;
	float *m_memory, *v_memory; /* AdamW moments */
	int B, T;
	size_t act_sizes[GPT2_NR_ACT_TENSORS];
	struct gpt2_acts acts, grad_acts;
	float *acts_memory, *grad_acts_memory;
	float mean_loss; /* of the last forward with targets */
	int is_view;     /* params belong to another model (gpt2_new_view): no grads, no moments */
	int profile;     /* time each layer call into prof_s (wall seconds, summed over calls) */
	double prof_s[GPT2_NR_PROF];
	/* Called by gpt2_backward as gradients become final, so that their reduction can start
	 * while backward goes on (zero.c's buckets): with layer l after layer l's (L-1 down to 0;
	 * lnfw and lnfb are final before layer L-1's), then with GPT2_GRADS_EMBEDDINGS after wte's
	 * and wpe's (wte, tied with the output projection, is written first and last). Backward
	 * writes no gradient again once its call came. NULL: none. */
	void (*grads_ready)(void *arg, struct gpt2 *m, int layer);
	void *grads_ready_arg;
};

#define GPT2_GRADS_EMBEDDINGS (-1)

/* Vp for a vocabulary: a multiple of 128 above 256 (50257 -> 50304, as llm.c). */
int gpt2_padded_vocab(int vocab_size);
void gpt2_param_sizes(const struct gpt2_config *c, size_t sizes[GPT2_NR_PARAM_TENSORS]);
/* The sizes of one tensor rank's shards of T (gpt2_tp); T == 1: gpt2_param_sizes. */
void gpt2_param_sizes_tp(const struct gpt2_config *c, int T, size_t sizes[GPT2_NR_PARAM_TENSORS]);
/* 1 for the tensors split over the tensor ranks (qkvw, qkvb, attprojw, fcw, fcb, fcprojw). */
int gpt2_param_is_sharded(int tensor);
/* 1 for tensors AdamW decays (the 2-D weights: wte, wpe, qkvw, attprojw, fcw, fcprojw). */
int gpt2_param_is_decayed(int tensor);

/* Allocates a model for micro-batches of B sequences of T <= max_seq_len tokens; NULL on a bad
 * shape or no memory. Parameters start at zero: see gpt2_init_random. */
struct gpt2 *gpt2_new(const struct gpt2_config *config, int B, int T);
/* gpt2_new for one rank of tensor parallelism: params, grads, moments and activations sized for
 * its shards; NULL also where tp->size does not divide the heads. tp NULL or of size 1:
 * gpt2_new. Such a model starts from a whole one: gpt2_tp_scatter. */
struct gpt2 *gpt2_new_tp(const struct gpt2_config *config, int B, int T, const struct gpt2_tp *tp);
/* The whole model's state only: parameters and, with moments, AdamW's m and v; no gradients,
 * no activations (B = T = 0: never run forward). What a whole model is for beside a rank's
 * shards or stage: drawn, read or resumed once at start and cut into the rank's part, or the
 * target a checkpoint is gathered into on the rank that writes it. NULL on a bad shape or no
 * memory. */
struct gpt2 *gpt2_new_whole(const struct gpt2_config *config, bool moments);
void gpt2_free(struct gpt2 *m);
/* A model that reads src's parameters (never a copy) with its own activations for (B, T):
 * for inference beside training, e.g. sampling one sequence. Forward only. */
struct gpt2 *gpt2_new_view(const struct gpt2 *src, int B, int T);
/* Between the whole model's flat layout (llm.c's, nr floats of gpt2_param_sizes) and tensor
 * rank t's (m->tp.size, m's shards): gpt2_tp_scatter copies rank t's part of whole into shard
 * (m->nr_params floats); gpt2_tp_gather puts shard, rank t's, in its places in whole, the
 * replicated tensors too (the same on every rank). The same for params, grads and moments. */
void gpt2_tp_scatter(const struct gpt2 *m, int t, const float *whole, float *shard);
void gpt2_tp_gather(const struct gpt2 *m, int t, const float *shard, float *whole);
/* GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L), layernorm
 * weights 1, biases 0. Draws from *rng (xorshift64*), advancing it. */
void gpt2_init_random(struct gpt2 *m, uint64_t *rng);

/* Forward over inputs (B,T); with targets also the loss (mean_loss and acts.losses). m->T may
 * be lowered below the T given to gpt2_new for a shorter forward (generation). */
void gpt2_forward(struct gpt2 *m, const int32_t *inputs, const int32_t *targets);
void gpt2_zero_grad(struct gpt2 *m);

/* gpt2_forward and gpt2_backward in the pieces a pipeline stage runs (the whole passes are
 * these in order): the embedding, block l (0 <= l < L), and the head (final layernorm, output
 * projection, loss). A block reads the residual stream entering it, gpt2_residual(m, l, false),
 * and writes the one entering block l + 1; backward mirrors it in grad_acts, after
 * gpt2_backward_begin zeroed them. grads_ready is called by gpt2_backward_block and
 * gpt2_backward_embed. */
void gpt2_forward_embed(struct gpt2 *m, const int32_t *inputs);
void gpt2_forward_block(struct gpt2 *m, int l);
void gpt2_forward_head(struct gpt2 *m, const int32_t *targets);
void gpt2_backward_begin(struct gpt2 *m);
void gpt2_backward_head(struct gpt2 *m, const int32_t *targets, float loss_scale);
void gpt2_backward_block(struct gpt2 *m, int l);
void gpt2_backward_embed(struct gpt2 *m, const int32_t *inputs);
/* The residual stream (B, T, C) entering block l (l == L: leaving the last block, the head's
 * input) in acts, or its gradient in grad_acts (grad). */
float *gpt2_residual(struct gpt2 *m, int l, bool grad);
/* Adds to grads the gradient of (loss_scale * sum of the per-token losses of the last
 * forward); loss_scale = 1/(B*T*accumulation steps) gives the gradient of the mean. */
void gpt2_backward(struct gpt2 *m, const int32_t *inputs, const int32_t *targets, float loss_scale);
/* The sum of squares of g (n), in double, in fixed chunks: the same bits for any thread count. */
double gpt2_sum_squares(const float *g, size_t n);
/* sqrt of the sum of squares of all gradients, summed in double. Under tensor parallelism the
 * whole model's: the shards' squares summed over the tensor group, the replicated tensors
 * counted once (gpt2_sum_squares_tp), one all-reduce. */
float gpt2_grad_norm(const struct gpt2 *m);
/* Under tensor parallelism, this rank's part of the whole model's sum of squares over the flat
 * gradients [lo, hi) (g holds them, g[0] is flat index lo): the sharded tensors' squares, and
 * the replicated ones' on tensor rank 0 only, so that the sum over the tensor group counts
 * each replicated element once. */
double gpt2_sum_squares_tp(const struct gpt2 *m, const float *g, size_t lo, size_t hi);
/* This rank's part of the whole model's sum of squares of the gradients [lo, hi) (0 where lo >=
 * hi): all of it on one rank (gpt2_sum_squares), under tensor parallelism gpt2_sum_squares_tp's.
 * A pipeline stage (pp.c) sums the ranges it counts, then the tensor group's parts. */
double gpt2_grad_sum_squares(const struct gpt2 *m, size_t lo, size_t hi);
/* x summed over the tensor group (in float: one all-reduce), the same on each of its ranks; x
 * itself on one rank. gpt2_grad_norm is sqrt(gpt2_tp_sum(gpt2_grad_sum_squares(all))). */
double gpt2_tp_sum(const struct gpt2 *m, double x);
/* One AdamW step (t counts from 1) with grads multiplied by grad_scale first (clipping). */
void gpt2_update(struct gpt2 *m, const struct adamw_config *opt, float lr, float grad_scale, int t);
/* gpt2_update of the flat parameters [lo, hi) only (hi <= nr_params), each element as
 * gpt2_update would: grads, mm and vv (hi - lo) hold that slice's gradients and moments
 * (ZeRO, zero.h). */
void gpt2_update_slice(struct gpt2 *m, const struct adamw_config *opt, float lr, float grad_scale,
	int t, size_t lo, size_t hi, const float *grads, float *mm, float *vv);
/* Grows params_memory and grads_memory to nr_floats (>= nr_params), the tail zero, so that
 * they split into equal slices per rank (ZeRO); the tensors are pointed again. 0, -EINVAL or
 * -ENOMEM. Before any view of m is made (gpt2_new_view copies the pointers). */
int gpt2_pad_flat(struct gpt2 *m, size_t nr_floats);

/* Learning rate at step (0-based) of nr_steps: linear warmup over warmup steps, then cosine
 * decay to lr * final_frac at the last step. */
float lr_schedule(float lr, int step, int warmup, int nr_steps, float final_frac);

/* xorshift64*: the trainer's only random number generator; its state is saved in checkpoints. */
uint64_t rng_next(uint64_t *state);
float rng_uniform(uint64_t *state); /* [0, 1) */
float rng_normal(uint64_t *state);

/* Points m->acts at mem, a caller-owned block of the sum of m->act_sizes floats, or back at m's
 * own acts_memory (mem NULL; m keeps owning and freeing that one): a pipeline stage keeps
 * several micro-batches' activations alive at once (pp.h). */
void gpt2_point_acts(struct gpt2 *m, float *mem);

#endif
