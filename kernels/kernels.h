/* kernels/: the CUDA kernels of the GPU trainer (train/gpt_cuda.cu), one C launch wrapper each.
 * Every kernel has a CPU twin in train/layers.h and a test against it (tests/gpu/).
 *
 * Conventions:
 * - Tensors of "dt" type (void *) hold fp32 or bf16 (enum kdtype); gradients of parameters,
 *   Adam moments, master weights, layernorm statistics and losses are always fp32.
 * - Shapes as in train/layers.h: N = B*T rows, C channels, row-major.
 * - Every wrapper only enqueues work on stream s: no host synchronisation, no allocation, so a
 *   training step can be captured in a CUDA graph. Scratch memory is passed in.
 * - Results are deterministic: no floating-point atomics, every sum in a fixed order.
 * - Unlike the CPU twins, activation gradients a kernel produces are WRITTEN (=), not
 *   accumulated, except where "+=" is said; parameter gradients are always accumulated (+=).
 */
#ifndef FERRY_KERNELS_H
#define FERRY_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kdtype {
	KDT_F32 = 0,
	KDT_BF16 = 1,
};

size_t kdtype_bytes(enum kdtype dt);
const char *kdtype_name(enum kdtype dt);

/* Errors: a wrapper returns nothing (it only enqueues work, also under graph capture), so a
 * CUDA or cuBLAS call that fails in one, or a matmul shape with no algorithm, is kept as the
 * first error of the process, and kernels/ goes on without exiting. The caller asks at its
 * sync points: k_error returns non-zero with "file:line: call: message" in msg and forgets it. */
int k_error(char *msg, size_t len);

/* casts: dst (n) = src (n) converted; same type is a copy */
void k_cast(void *dst, enum kdtype dst_dt, const void *src, enum kdtype src_dt, size_t n,
	cudaStream_t s);

/* out (B,T,C) = wte[inp] (Vp,C) + wpe[t] (maxT,C) */
void k_encoder_forward(void *out, const int32_t *inp, const void *wte, const void *wpe, int B,
	int T, int C, enum kdtype dt, cudaStream_t s);
/* Scratch for k_encoder_backward (a stable radix sort of the positions by token). */
size_t k_encoder_backward_scratch_bytes(int B, int T, int V);
/* dwte (Vp,C) += and dwpe (maxT,C) += (fp32): each row summed in position order, as the CPU
 * twin does, so fp32 results equal the twin's up to rounding of the inputs. */
void k_encoder_backward(float *dwte, float *dwpe, const void *dout, const int32_t *inp, int B,
	int T, int C, int V, void *scratch, size_t scratch_bytes, enum kdtype dt, cudaStream_t s);

/* out (N,C) = layernorm(inp); mean, rstd (N) fp32 */
void k_layernorm_forward(void *out, float *mean, float *rstd, const void *inp, const void *weight,
	const void *bias, int N, int C, enum kdtype dt, cudaStream_t s);
/* The residual add fused in: residual (N,C) = a + b (rounded to dt), out = layernorm(residual). */
void k_residual_layernorm_forward(void *residual, void *out, float *mean, float *rstd,
	const void *a, const void *b, const void *weight, const void *bias, int N, int C,
	enum kdtype dt, cudaStream_t s);
/* Floats of scratch k_layernorm_backward needs. */
size_t k_layernorm_backward_scratch_floats(int N, int C);
/* dinp (N,C) += (the residual stream's gradient: the fused residual backward), dweight and dbias
 * (C) += in fp32. */
void k_layernorm_backward(void *dinp, float *dweight, float *dbias, const void *dout,
	const void *inp, const void *weight, const float *mean, const float *rstd, float *scratch,
	int N, int C, enum kdtype dt, cudaStream_t s);

/* GELU, tanh approximation. backward: dinp = gelu'(inp) * dout; dinp may alias dout. */
void k_gelu_forward(void *out, const void *inp, size_t n, enum kdtype dt, cudaStream_t s);
void k_gelu_backward(void *dinp, const void *inp, const void *dout, size_t n, enum kdtype dt,
	cudaStream_t s);

/* Causal attention that never materialises (T,T): flash-style online softmax.
 * qkv (B,T,3C), out (B,T,C), lse (B,NH,T) fp32: the log-sum-exp of each row, kept for backward.
 * Head size C/NH must be 16, 32, 64 or 128 (k_attention_supported). */
int k_attention_supported(int C, int NH);
void k_attention_forward(void *out, float *lse, const void *qkv, int B, int T, int C, int NH,
	enum kdtype dt, cudaStream_t s);
/* dqkv (B,T,3C) written; delta (B,NH,T) fp32 scratch. */
void k_attention_backward(void *dqkv, float *delta, const void *dout, const void *qkv,
	const void *out, const float *lse, int B, int T, int C, int NH, enum kdtype dt,
	cudaStream_t s);
/* The same forward and backward on tensor cores (attention_tc.cu; sm_80 and newer): bf16 only,
 * head size 16, 32, 64 or 128 (k_attention_tc_supported). Either forward's lse serves either
 * backward. The CUDA-core kernels above stay the reference they are tested against. */
int k_attention_tc_supported(int C, int NH, enum kdtype dt);
void k_attention_forward_tc(void *out, float *lse, const void *qkv, int B, int T, int C, int NH,
	enum kdtype dt, cudaStream_t s);
void k_attention_backward_tc(void *dqkv, float *delta, const void *dout, const void *qkv,
	const void *out, const float *lse, int B, int T, int C, int NH, enum kdtype dt,
	cudaStream_t s);

/* Softmax over the first V of Vp logits per row and the cross-entropy of the target:
 * losses (N) fp32. With write_grad, logits (N,Vp) is overwritten by its gradient
 * (softmax - onehot(target)) * dloss, padded columns 0 (the fused backward). */
void k_crossentropy(void *logits, float *losses, const int32_t *targets, float dloss,
	int write_grad, int N, int V, int Vp, enum kdtype dt, cudaStream_t s);
/* acc[0] += (double)(float)(sum(losses[0..N)) / N), summed in a fixed order (one block). */
void k_loss_accumulate(double *acc, const float *losses, int N, cudaStream_t s);

/* Global gradient norm: out[0] = sqrt(sum g^2) / world (the norm of the mean of world summed
 * gradients), out[1] = the factor AdamW multiplies the summed gradients by:
 * (clip > 0 && norm > clip ? clip / norm : 1) / world. scratch: K_NORM_BLOCKS doubles. */
#define K_NORM_BLOCKS 264
void k_global_norm(float *out, const float *g, size_t n, float clip, int world, double *scratch,
	cudaStream_t s);
/* The same in two steps, for gradients held in slices across ranks (ZeRO 2): out[0] = the sum
 * of squares of x[0..n) (k_global_norm's fixed-order first pass, then a float), which the ranks
 * all-reduce; then k_norm_from_sumsq makes out[0..1] as k_global_norm does from that sum. */
void k_sum_squares(float *out, const float *x, size_t n, double *scratch, cudaStream_t s);
void k_norm_from_sumsq(float *out, const float *sumsq, float clip, int world, cudaStream_t s);
/* k_sum_squares over nr ranges of x (offs[r], lens[r]: host arrays, at most K_NORM_RANGES)
 * at once: out[0] = the sum of their squares, each range's partials in double and all of them
 * summed in one fixed order, then a float (twin: gpt2_sum_squares_tp, which sums a tensor-
 * parallel rank's shards and, on tensor rank 0, the replicated tensors). scratch: nr *
 * K_NORM_BLOCKS doubles. */
#define K_NORM_RANGES 8
void k_sum_squares_ranges(float *out, const float *x, const size_t *offs, const size_t *lens,
	int nr, double *scratch, cudaStream_t s);

/* AdamW on one tensor, as train/model.c gpt2_update: master (fp32) updated, and copied to
 * params (bf16) when params is not NULL. hp (device) = { lr, 1 - beta1^t, 1 - beta2^t },
 * grad_scale (device) the factor from k_global_norm (out + 1). */
void k_adamw(float *master, void *params, enum kdtype params_dt, const float *grads, float *m,
	float *v, size_t n, const float *hp, const float *grad_scale, float beta1, float beta2,
	float eps, float weight_decay, cudaStream_t s);

/* out (N,OC) += bias (OC), rounded once to dt: the bias of a row-parallel matmul, added after
 * the tensor ranks' partial sums were all-reduced (twin: add_bias in train/model.c). */
void k_add_bias(void *out, const void *bias, int N, int OC, enum kdtype dt, cudaStream_t s);

/* Column sums for bias gradients: dbias (OC) += sum over N rows of dout (N,OC), fp32, fixed
 * order. scratch: k_bias_backward_scratch_floats floats. */
size_t k_bias_backward_scratch_floats(int N, int OC);
void k_bias_backward(float *dbias, const void *dout, float *scratch, int N, int OC, enum kdtype dt,
	cudaStream_t s);

/* Matmuls through cuBLASLt; the algorithm for each shape is chosen once and cached in the
 * handle. All pointers 16-byte aligned; C, OC multiples of 8. */
struct kmatmul;
struct kmatmul *kmatmul_new(void);
void kmatmul_free(struct kmatmul *h);
/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC; may be NULL). With pre_gelu non-NULL the
 * GELU epilogue: pre_gelu = that sum, out = gelu(pre_gelu). */
void k_matmul_forward(struct kmatmul *h, void *out, void *pre_gelu, const void *inp,
	const void *weight, const void *bias, int N, int C, int OC, enum kdtype dt, cudaStream_t s);
/* dinp (N,C) = dout (N,OC) @ weight (written; NULL skips), dweight (OC,C) += dout^T @ inp in
 * fp32, dbias (OC) += column sums of dout (NULL: no bias; scratch as k_bias_backward). */
void k_matmul_backward(struct kmatmul *h, void *dinp, float *dweight, float *dbias,
	const void *dout, const void *inp, const void *weight, float *scratch, int N, int C, int OC,
	enum kdtype dt, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
