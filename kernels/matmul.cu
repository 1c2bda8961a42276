/* kernels/: matmuls through cuBLASLt (twin: matmul_forward/_backward in train/layers.c), with
 * the bias and GELU epilogues fused in. Each (shape, transposes, types, epilogue) gets its
 * algorithm from the heuristic once; later calls reuse it from the handle's cache. Where cuBLASLt
 * has no GELU epilogue for a shape and type, the forward falls back to the plain matmul and the
 * GELU kernel; failures are kept for k_error (kernels.h), never exit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "kernels/common.cuh"

/* In find_algo and lt_matmul: keep the failure for k_error and leave through its cleanup. */
#define CUBLAS_CHECK(x)                                                                            \
	do {                                                                                       \
		cublasStatus_t st_ = (x);                                                          \
		if (st_ != CUBLAS_STATUS_SUCCESS) {                                                \
			k_error_record(__FILE__, __LINE__, #x, cublasLtGetStatusString(st_));      \
			ret = -1;                                                                  \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

#define WORKSPACE_BYTES (32u << 20)
#define MAX_ALGOS       256

struct algo_key {
	int m, n, k, transa, transb, epilogue, ab_type, d_type, accumulate;
};

/* algos[0..nr_algos) are the cached choices; single-threaded use (one per trainer stream). */
struct kmatmul {
	cublasLtHandle_t lt;
	void *workspace;
	int nr_algos;
	struct algo_key keys[MAX_ALGOS];
	cublasLtMatmulAlgo_t algos[MAX_ALGOS];
};

extern "C" struct kmatmul *kmatmul_new(void)
{
	struct kmatmul *h = (struct kmatmul *)calloc(1, sizeof(*h));
	cublasStatus_t st;
	cudaError_t e;
	if (!h)
		return NULL;
	if ((st = cublasLtCreate(&h->lt)) != CUBLAS_STATUS_SUCCESS) {
		k_error_record(__FILE__, __LINE__, "cublasLtCreate", cublasLtGetStatusString(st));
		free(h);
		return NULL;
	}
	if ((e = cudaMalloc(&h->workspace, WORKSPACE_BYTES)) != cudaSuccess) {
		k_error_record(__FILE__, __LINE__, "cudaMalloc", cudaGetErrorString(e));
		kmatmul_free(h);
		return NULL;
	}
	return h;
}

extern "C" void kmatmul_free(struct kmatmul *h)
{
	if (!h)
		return;
	cublasLtDestroy(h->lt);
	cudaFree(h->workspace);
	free(h);
}

static cudaDataType_t cuda_type(enum kdtype dt)
{
	return dt == KDT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* The algorithm for key: from the handle's cache, else the heuristic's first choice (cached).
 * 0, 1 when there is none, -1 on an error. */
static int find_algo(struct kmatmul *h, const struct algo_key *key, cublasLtMatmulDesc_t desc,
	cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t ld,
	cublasLtMatmulAlgo_t *algo)
{
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	cublasStatus_t st;
	size_t ws = WORKSPACE_BYTES;
	uint32_t align = 16;
	int nr = 0, ret = 0;
	cublasLtMatmulPreferenceAttributes_t al[] = {
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
	};
	for (int i = 0; i < h->nr_algos; i++)
		if (memcmp(&h->keys[i], key, sizeof(*key)) == 0) {
			*algo = h->algos[i];
			return 0;
		}
	CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
	CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref,
		CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
	for (int i = 0; i < 4; i++)
		CUBLAS_CHECK(
			cublasLtMatmulPreferenceSetAttribute(pref, al[i], &align, sizeof(align)));
	/* NOT_SUPPORTED: no heuristic for this configuration, the same as no algorithm */
	st = cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &res, &nr);
	if (st == CUBLAS_STATUS_NOT_SUPPORTED)
		nr = 0;
	else
		CUBLAS_CHECK(st);
	if (nr == 0) {
		ret = 1;
		goto out;
	}
	*algo = res.algo;
	if (h->nr_algos < MAX_ALGOS) {
		h->keys[h->nr_algos] = *key;
		h->algos[h->nr_algos++] = *algo;
	}
out:
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	return ret;
}

/* Column-major D (m,n) = op(A) op(B) (+ beta D) with epilogue; A stored (k,m) when transa, else
 * (m,k); B stored (n,k) when transb, else (k,n). 0 when enqueued, 1 when cuBLASLt has no
 * algorithm for it (the caller decides), -1 on an error (kept for k_error). */
static int lt_matmul(struct kmatmul *h, void *D, cudaDataType_t dtype, const void *A, int transa,
	int lda, const void *B, int transb, int ldb, cudaDataType_t abtype, int m, int n, int k,
	cublasLtEpilogue_t epi, const void *bias, void *aux, int accumulate, cudaStream_t s)
{
	cublasLtMatmulDesc_t desc = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
	cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
	struct algo_key key;
	cublasLtMatmulAlgo_t algo;
	const float one = 1.0f, zero = 0.0f;
	int64_t aux_ld = m;
	int ret = 0;
	memset(&key, 0, sizeof(key)); /* compared with memcmp: no stray padding */
	key = (struct algo_key){ m, n, k, transa, transb, (int)epi, (int)abtype, (int)dtype,
		accumulate };
	CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	CUBLAS_CHECK(
		cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
	CUBLAS_CHECK(
		cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
		sizeof(epi)));
	if (bias)
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
			&bias, sizeof(bias)));
	if (aux) {
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc,
			CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc,
			CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
	}
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, abtype, transa ? k : m, transa ? m : k, lda));
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, abtype, transb ? n : k, transb ? k : n, ldb));
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dtype, m, n, m));
	ret = find_algo(h, &key, desc, la, lb, ld, &algo);
	if (ret != 0)
		goto out;
	CUBLAS_CHECK(cublasLtMatmul(h->lt, desc, &one, A, la, B, lb, accumulate ? &one : &zero, D,
		ld, D, ld, &algo, h->workspace, WORKSPACE_BYTES, s));
out:
	if (la)
		cublasLtMatrixLayoutDestroy(la);
	if (lb)
		cublasLtMatrixLayoutDestroy(lb);
	if (ld)
		cublasLtMatrixLayoutDestroy(ld);
	if (desc)
		cublasLtMatmulDescDestroy(desc);
	return ret;
}

static void no_algorithm(int m, int n, int k, cublasLtEpilogue_t epi)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "no algorithm for m %d n %d k %d epilogue %d", m, n, k,
		(int)epi);
	k_error_record(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic", msg);
}

extern "C" void k_matmul_forward(struct kmatmul *h, void *out, void *pre_gelu, const void *inp,
	const void *weight, const void *bias, int N, int C, int OC, enum kdtype dt, cudaStream_t s)
{
	cudaDataType_t t = cuda_type(dt);
	cublasLtEpilogue_t plain = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
	cublasLtEpilogue_t gelu =
		bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
	/* column-major D (OC, N) = W (stored (C,OC)) ^T @ inp (C,N) */
	int r = lt_matmul(h, out, t, weight, 1, C, inp, 0, C, t, OC, N, C, pre_gelu ? gelu : plain,
		bias, pre_gelu, 0, s);
	if (r == 1 && pre_gelu) {
		/* no GELU epilogue for this shape and type (fp32 may lack one): the sum into
		 * pre_gelu, then the GELU kernel. out differs only in rounding: the epilogue
		 * takes GELU of the unrounded sum. */
		r = lt_matmul(h, pre_gelu, t, weight, 1, C, inp, 0, C, t, OC, N, C, plain, bias,
			NULL, 0, s);
		if (r == 0)
			k_gelu_forward(out, pre_gelu, (size_t)N * OC, dt, s);
	}
	if (r == 1)
		no_algorithm(OC, N, C, pre_gelu ? gelu : plain);
}

extern "C" void k_matmul_backward(struct kmatmul *h, void *dinp, float *dweight, float *dbias,
	const void *dout, const void *inp, const void *weight, float *scratch, int N, int C, int OC,
	enum kdtype dt, cudaStream_t s)
{
	cudaDataType_t t = cuda_type(dt);
	/* dinp^T (C,N) = W (stored (C,OC), no transpose) @ dout^T (OC,N) */
	if (dinp && lt_matmul(h, dinp, t, weight, 0, C, dout, 0, OC, t, C, N, OC,
			    CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0, s) == 1)
		no_algorithm(C, N, OC, CUBLASLT_EPILOGUE_DEFAULT);
	/* dweight^T (C,OC) += inp^T (C,N) @ dout (stored (OC,N), transposed), fp32 out */
	if (lt_matmul(h, dweight, CUDA_R_32F, inp, 0, C, dout, 1, OC, t, C, OC, N,
		    CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 1, s) == 1)
		no_algorithm(C, OC, N, CUBLASLT_EPILOGUE_DEFAULT);
	if (dbias)
		k_bias_backward(dbias, dout, scratch, N, OC, dt, s);
}
