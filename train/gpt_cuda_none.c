/* train/: the GPU trainer's backend in a build without CUDA: `--device cuda` gets a clear
 * error from gpt2_cuda_available; nothing else is ever called. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "train/gpt_cuda.h"

int gpt2_cuda_available(char *err, size_t errlen)
{
	snprintf(err, errlen, "--device cuda: ferry was built without CUDA (meson -Dcuda=enabled)");
	return -ENOSYS;
}

int gpt2_cuda_local_device(void)
{
	return -1;
}

static void unreachable(void) __attribute__((noreturn));
static void unreachable(void)
{
	fprintf(stderr, "ferry: GPU trainer called in a build without CUDA\n");
	abort();
}

struct gpt2_cuda *gpt2_cuda_new(const struct gpt2 *host, int B, int T,
	const struct gpt2_cuda_opts *o, char *err, size_t errlen)
{
	gpt2_cuda_available(err, errlen);
	return NULL;
}

void gpt2_cuda_free(struct gpt2_cuda *g)
{
}

void gpt2_cuda_store(struct gpt2_cuda *g, struct gpt2 *host)
{
	unreachable();
}

void gpt2_cuda_memory(const struct gpt2_cuda *g, struct zero_memory *mem)
{
	unreachable();
}

int gpt2_cuda_profile(struct gpt2_cuda *g, double *secs)
{
	unreachable();
}

void gpt2_cuda_zero_grad(struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_micro_step(struct gpt2_cuda *g, const struct loader_batch *b, float loss_scale)
{
	unreachable();
}

void gpt2_cuda_update(struct gpt2_cuda *g, struct comm *comm, const struct adamw_config *opt,
	float lr, float grad_clip, int t)
{
	unreachable();
}

float gpt2_cuda_step_result(struct gpt2_cuda *g, int accum, float *norm)
{
	unreachable();
}

float gpt2_cuda_eval(struct gpt2_cuda *g, const struct loader_batch *b)
{
	unreachable();
}

void gpt2_cuda_set_tokens(struct gpt2_cuda *g, const int32_t *inputs, const int32_t *targets)
{
	unreachable();
}

void gpt2_cuda_forward(struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_backward(struct gpt2_cuda *g, float loss_scale)
{
	unreachable();
}

void gpt2_cuda_copy_logits(struct gpt2_cuda *g, float *out)
{
	unreachable();
}

void gpt2_cuda_copy_grads(struct gpt2_cuda *g, float *out)
{
	unreachable();
}

void gpt2_cuda_reduce_begin(struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_reduce_stats(struct gpt2_cuda *g)
{
	unreachable();
}

int gpt2_cuda_pp_stage(struct gpt2_cuda *g, int first, int last, int nr_slots, char *err,
	size_t errlen)
{
	unreachable();
}

void *gpt2_cuda_pp_recv(struct gpt2_cuda *g, int grad)
{
	unreachable();
}

size_t gpt2_cuda_pp_stream_bytes(const struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_pp_forward(struct gpt2_cuda *g, int i, const struct loader_batch *b,
	const void *stream_in)
{
	unreachable();
}

void gpt2_cuda_pp_backward(struct gpt2_cuda *g, int i, const void *grad_in, float loss_scale)
{
	unreachable();
}

const void *gpt2_cuda_pp_stream_out(struct gpt2_cuda *g)
{
	unreachable();
}

const void *gpt2_cuda_pp_grad_out(struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_pp_sync(struct gpt2_cuda *g, struct comm *pipe)
{
	unreachable();
}

float gpt2_cuda_pp_eval_loss(struct gpt2_cuda *g)
{
	unreachable();
}

void gpt2_cuda_pp_exchange_wte(struct gpt2_cuda *g, struct comm *pipe, int peer)
{
	unreachable();
}

void gpt2_cuda_pp_reduce(struct gpt2_cuda *g)
{
	unreachable();
}

double gpt2_cuda_pp_sum_squares(struct gpt2_cuda *g, int count_wte)
{
	unreachable();
}

void gpt2_cuda_pp_update(struct gpt2_cuda *g, const struct adamw_config *opt, float lr,
	float grad_scale, float norm, int t)
{
	unreachable();
}
