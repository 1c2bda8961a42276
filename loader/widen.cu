/* GPU widening of staged raw tokens (uint16 or uint32 rows) into int32 inputs and targets;
 * the device half of stage_cuda.c. widen_rows() in read.c is its CPU twin. */
#include <cuda_runtime.h>
#include <stdint.h>

template <typename T>
__global__ void widen_kernel(const T *raw, uint32_t batch, uint32_t seq_len, uint32_t stride,
	int32_t *inputs, int32_t *targets)
{
	size_t n = (size_t)batch * seq_len;

	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
		i += (size_t)gridDim.x * blockDim.x) {
		size_t b = i / seq_len, t = i % seq_len;
		const T *row = raw + b * stride;

		inputs[i] = (int32_t)row[t];
		targets[i] = (int32_t)row[t + 1];
	}
}

extern "C" int loader_widen_launch(const void *d_raw, uint32_t token_bytes, uint32_t batch,
	uint32_t seq_len, uint32_t row_stride, int32_t *d_inputs, int32_t *d_targets,
	cudaStream_t stream)
{
	size_t n = (size_t)batch * seq_len;
	unsigned threads = 256, blocks = (unsigned)((n + threads - 1) / threads);

	if (blocks > 4096)
		blocks = 4096;
	if (blocks == 0)
		return 0;
	if (token_bytes == 2)
		widen_kernel<uint16_t><<<blocks, threads, 0, stream>>>((const uint16_t *)d_raw,
			batch, seq_len, row_stride, d_inputs, d_targets);
	else
		widen_kernel<uint32_t><<<blocks, threads, 0, stream>>>((const uint32_t *)d_raw,
			batch, seq_len, row_stride, d_inputs, d_targets);
	return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
