/* train/: the GPT-2 layers in plain fp32 C, one *_forward / *_backward pair per layer. The CPU
 * trainer is built from them, and each CUDA kernel in kernels/ is tested against its twin here.
 *
 * Conventions (as in llm.c):
 * - B batch, T sequence length, C channels, NH heads, V vocabulary, Vp padded vocabulary,
 *   N = B*T rows; every tensor is row-major with the shape given in the comment.
 * - Backward functions ACCUMULATE (+=) into every gradient they write, because the residual
 *   stream and the tied embedding receive gradients from more than one place; callers zero
 *   gradients once per optimizer step (parameters) or per micro-step (activations).
 * - Results do not depend on the number of OpenMP threads: every parallel loop writes disjoint
 *   outputs and every sum runs in a fixed order. That is what makes runs bit-for-bit
 *   reproducible and a resume exact whatever --threads says.
 */
#ifndef FERRY_TRAIN_LAYERS_H
#define FERRY_TRAIN_LAYERS_H

#include <stdint.h>

/* out (B,T,C) = wte[inp] (Vp,C) + wpe[t] (maxT,C) */
void encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B,
	int T, int C);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T,
	int C);

/* out (N,C) = (inp - mean) * rstd * weight + bias, per row; saves mean (N) and rstd (N). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
	const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
	const float *inp, const float *weight, const float *mean, const float *rstd, int N, int C);

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); bias may be NULL. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
	int C, int OC);
/* dbias may be NULL (no bias). */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
	const float *weight, int N, int C, int OC);

/* Causal multi-head self-attention.
 * qkv (B,T,3C): per position the query, key and value vectors, heads of size C/NH side by side.
 * out (B,T,C): heads concatenated; att (B,NH,T,T): softmax probabilities (zero above the
 * diagonal), kept for backward. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
	int T, int C, int NH);

/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void gelu_forward(float *out, const float *inp, int n);
void gelu_backward(float *dinp, const float *inp, const float *dout, int n);

/* out = a + b, elementwise over n. */
void residual_forward(float *out, const float *a, const float *b, int n);
void residual_backward(float *da, float *db, const float *dout, int n);

/* Softmax over the first V of Vp logits per row, and the cross-entropy of the target.
 * logits (N,Vp), targets (N), probs (N,Vp) with the padded columns set to 0, losses (N). */
void softmax_crossentropy_forward(float *losses, float *probs, const float *logits,
	const int32_t *targets, int N, int V, int Vp);
/* dlogits (N,Vp) += (probs - onehot(target)) * dlosses[row]; padded columns get nothing. */
void softmax_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets,
	const float *dlosses, int N, int V, int Vp);

#endif
