/* kernels/: the token + position embedding (twin: encoder_forward/_backward in train/layers.c).
 * Backward is deterministic without atomics: a stable radix sort (CUB) groups positions by
 * token, then each token's rows are summed in position order, the CPU twin's order. */
#include <cub/cub.cuh>

#include "kernels/common.cuh"

template <typename T>
__global__ void encoder_forward_kernel(T *out, const int32_t *inp, const T *wte, const T *wpe,
	int T_, int C, size_t total)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
		i += (size_t)gridDim.x * blockDim.x) {
		size_t n = i / C;
		int c = (int)(i % C), t = (int)(n % T_);
		out[i] =
			from_f<T>(to_f(wte[(size_t)inp[n] * C + c]) + to_f(wpe[(size_t)t * C + c]));
	}
}

extern "C" void k_encoder_forward(void *out, const int32_t *inp, const void *wte, const void *wpe,
	int B, int T, int C, enum kdtype dt, cudaStream_t s)
{
	size_t total = (size_t)B * T * C;
	unsigned int grid = div_up(total, 256);
	if (grid > 65536)
		grid = 65536;
	KDISPATCH(dt, X,
		encoder_forward_kernel<X>
		<<<grid, 256, 0, s>>>((X *)out, inp, (const X *)wte, (const X *)wpe, T, C, total));
	KLAUNCH_CHECK();
}

/* dwpe[t][c] += sum over b in order */
template <typename T>
__global__ void encoder_dwpe_kernel(float *dwpe, const T *dout, int B, int T_, int C)
{
	size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	if (i >= (size_t)T_ * C)
		return;
	float acc = dwpe[i];
	for (int b = 0; b < B; b++)
		acc += to_f(dout[(size_t)b * T_ * C + i]);
	dwpe[i] = acc;
}

__global__ void iota_kernel(int32_t *p, int n)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		p[i] = i;
}

/* One block per sorted index k that starts a run of equal tokens: the block sums the rows of
 * that run, in position order (the sort is stable), into dwte. */
template <typename T>
__global__ void encoder_dwte_kernel(float *dwte, const T *dout, const int32_t *keys,
	const int32_t *pos, int N, int C)
{
	int k = blockIdx.x;
	int tok = keys[k];
	if (k > 0 && keys[k - 1] == tok)
		return;
	int end = k + 1;
	while (end < N && keys[end] == tok)
		end++;
	for (int c = threadIdx.x; c < C; c += blockDim.x) {
		float acc = dwte[(size_t)tok * C + c];
		for (int j = k; j < end; j++)
			acc += to_f(dout[(size_t)pos[j] * C + c]);
		dwte[(size_t)tok * C + c] = acc;
	}
}

static int sort_bits(int V)
{
	int bits = 1;
	while (bits < 31 && (1 << bits) < V)
		bits++;
	return bits;
}

static size_t align256(size_t x)
{
	return (x + 255) & ~(size_t)255;
}

extern "C" size_t k_encoder_backward_scratch_bytes(int B, int T, int V)
{
	int N = B * T;
	size_t temp = 0;
	cub::DeviceRadixSort::SortPairs(NULL, temp, (const int32_t *)NULL, (int32_t *)NULL,
		(const int32_t *)NULL, (int32_t *)NULL, N, 0, sort_bits(V));
	return 3 * align256((size_t)N * sizeof(int32_t)) + align256(temp);
}

extern "C" void k_encoder_backward(float *dwte, float *dwpe, const void *dout, const int32_t *inp,
	int B, int T, int C, int V, void *scratch, size_t scratch_bytes, enum kdtype dt,
	cudaStream_t s)
{
	int N = B * T;
	size_t a = align256((size_t)N * sizeof(int32_t));
	char *p = (char *)scratch;
	int32_t *keys = (int32_t *)p, *pos_in = (int32_t *)(p + a), *pos = (int32_t *)(p + 2 * a);
	void *temp = p + 3 * a;
	size_t temp_bytes = scratch_bytes - 3 * a;
	iota_kernel<<<div_up(N, 256), 256, 0, s>>>(pos_in, N);
	KLAUNCH_CHECK();
	K_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, inp, keys, pos_in, pos, N, 0,
		sort_bits(V), s));
	int threads = C < 256 ? ((C + 31) / 32) * 32 : 256;
	KDISPATCH(dt, X, {
		encoder_dwpe_kernel<X>
			<<<div_up((size_t)T * C, 256), 256, 0, s>>>(dwpe, (const X *)dout, B, T, C);
		encoder_dwte_kernel<X>
			<<<N, threads, 0, s>>>(dwte, (const X *)dout, keys, pos, N, C);
	});
	KLAUNCH_CHECK();
}
