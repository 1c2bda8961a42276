/* kernels/: matmuls through cuBLASLt (twin: matmul_forward/_backward in train/layers.c), with
 * the bias and GELU epilogues fused in. Each (shape, transposes, types, epilogue) gets its
 * algorithm from the heuristic once; later calls reuse it from the handle's cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "kernels/common.cuh"

#define CUBLAS_CHECK(x)                                                        \
	do {                                                                   \
		cublasStatus_t st_ = (x);                                      \
		if (st_ != CUBLAS_STATUS_SUCCESS) {                            \
			fprintf(stderr, "cuBLAS error at %s:%d: %s: %d\n", __FILE__, \
				__LINE__, #x, (int)st_);                       \
			exit(1);                                               \
		}                                                              \
	} while (0)

#define WORKSPACE_BYTES (32u << 20)
#define MAX_ALGOS 256

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
	if (!h)
		return NULL;
	CUBLAS_CHECK(cublasLtCreate(&h->lt));
	CUDA_CHECK(cudaMalloc(&h->workspace, WORKSPACE_BYTES));
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

/* Column-major D (m,n) = op(A) op(B) (+ beta D) with epilogue; A stored (k,m) when transa, else
 * (m,k); B stored (n,k) when transb, else (k,n). */
static void lt_matmul(struct kmatmul *h, void *D, cudaDataType_t dtype, const void *A, int transa,
	int lda, const void *B, int transb, int ldb, cudaDataType_t abtype, int m, int n, int k,
	cublasLtEpilogue_t epi, const void *bias, void *aux, int accumulate, cudaStream_t s)
{
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t la, lb, ld;
	cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
	CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
		sizeof(ta)));
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
		sizeof(tb)));
	CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
		sizeof(epi)));
	if (bias)
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc,
			CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
	if (aux) {
		int64_t aux_ld = m;
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc,
			CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
		CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc,
			CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
	}
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, abtype, transa ? k : m, transa ? m : k, lda));
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, abtype, transb ? n : k, transb ? k : n, ldb));
	CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dtype, m, n, m));

	struct algo_key key;
	memset(&key, 0, sizeof(key));
	key = (struct algo_key){ m, n, k, transa, transb, (int)epi, (int)abtype, (int)dtype,
		accumulate };
	int found = -1;
	for (int i = 0; i < h->nr_algos; i++)
		if (memcmp(&h->keys[i], &key, sizeof(key)) == 0) {
			found = i;
			break;
		}
	cublasLtMatmulAlgo_t algo;
	if (found >= 0) {
		algo = h->algos[found];
	} else {
		cublasLtMatmulPreference_t pref;
		size_t ws = WORKSPACE_BYTES;
		uint32_t align = 16;
		CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
		CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref,
			CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
		cublasLtMatmulPreferenceAttributes_t al[] = {
			CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
			CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
			CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
			CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
		};
		for (int i = 0; i < 4; i++)
			CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, al[i], &align,
				sizeof(align)));
		cublasLtMatmulHeuristicResult_t res;
		int nr = 0;
		CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &res,
			&nr));
		cublasLtMatmulPreferenceDestroy(pref);
		if (nr == 0) {
			fprintf(stderr, "cuBLASLt: no algorithm for m %d n %d k %d epilogue %d\n", m, n,
				k, (int)epi);
			exit(1);
		}
		algo = res.algo;
		if (h->nr_algos < MAX_ALGOS) {
			h->keys[h->nr_algos] = key;
			h->algos[h->nr_algos++] = algo;
		}
	}
	const float one = 1.0f, zero = 0.0f;
	CUBLAS_CHECK(cublasLtMatmul(h->lt, desc, &one, A, la, B, lb, accumulate ? &one : &zero, D,
		ld, D, ld, &algo, h->workspace, WORKSPACE_BYTES, s));
	cublasLtMatrixLayoutDestroy(la);
	cublasLtMatrixLayoutDestroy(lb);
	cublasLtMatrixLayoutDestroy(ld);
	cublasLtMatmulDescDestroy(desc);
}

extern "C" void k_matmul_forward(struct kmatmul *h, void *out, void *pre_gelu, const void *inp,
	const void *weight, const void *bias, int N, int C, int OC, enum kdtype dt, cudaStream_t s)
{
	cudaDataType_t t = cuda_type(dt);
	cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
	if (pre_gelu)
		epi = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
	else if (bias)
		epi = CUBLASLT_EPILOGUE_BIAS;
	/* out^T (OC,N) = weight^T^T... : column-major D (OC, N) = W (stored (C,OC)) ^T @ inp (C,N) */
	lt_matmul(h, out, t, weight, 1, C, inp, 0, C, t, OC, N, C, epi, bias, pre_gelu, 0, s);
}

extern "C" void k_matmul_backward(struct kmatmul *h, void *dinp, float *dweight, float *dbias,
	const void *dout, const void *inp, const void *weight, float *scratch, int N, int C, int OC,
	enum kdtype dt, cudaStream_t s)
{
	cudaDataType_t t = cuda_type(dt);
	/* dinp^T (C,N) = W (stored (C,OC), no transpose) @ dout^T (OC,N) */
	if (dinp)
		lt_matmul(h, dinp, t, weight, 0, C, dout, 0, OC, t, C, N, OC,
			CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0, s);
	/* dweight^T (C,OC) += inp^T (C,N) @ dout (stored (OC,N), transposed), fp32 out */
	lt_matmul(h, dweight, CUDA_R_32F, inp, 0, C, dout, 1, OC, t, C, OC, N,
		CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 1, s);
	if (dbias)
		k_bias_backward(dbias, dout, scratch, N, OC, dt, s);
}
