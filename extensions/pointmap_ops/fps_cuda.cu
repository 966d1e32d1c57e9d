// Farthest point sampling on the GPU: one block per cloud, the exact arithmetic of fps_ref.
//
// Squares and sums use the _rn intrinsics so nvcc cannot contract them into FMAs: the distances, and
// so the indices, equal the CPU reference bit for bit. The running min-distance lives in a global
// scratch buffer; each step reduces (value, index) pairs with warp shuffles, ties to the lowest index.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace {

__device__ __forceinline__ float sq_dist(float dx, float dy, float dz) {
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}
__device__ __forceinline__ double sq_dist(double dx, double dy, double dz) {
  return __dadd_rn(__dadd_rn(__dmul_rn(dx, dx), __dmul_rn(dy, dy)), __dmul_rn(dz, dz));
}

// Keep (v, i) if it beats (bv, bi): larger value, or equal value and smaller index.
template <typename T>
__device__ __forceinline__ void keep_max(T& bv, int& bi, T v, int i) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

template <typename T, int kThreads>
__global__ void fps_kernel(const T* __restrict__ xyz, T* __restrict__ dist, int64_t* __restrict__ out,
                           int N, int n) {
  constexpr int kWarps = kThreads / 32;
  __shared__ T s_val[kWarps];
  __shared__ int s_idx[kWarps];
  __shared__ int s_far;
  const int b = blockIdx.x;
  const T* p = xyz + static_cast<int64_t>(b) * N * 3;
  T* d = dist + static_cast<int64_t>(b) * N;
  int64_t* o = out + static_cast<int64_t>(b) * n;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < N; i += kThreads) d[i] = std::numeric_limits<T>::infinity();
  if (tid == 0) {
    o[0] = 0;
    s_far = 0;
  }
  __syncthreads();
  for (int s = 1; s < n; ++s) {
    const int far = s_far;
    const T cx = p[far * 3], cy = p[far * 3 + 1], cz = p[far * 3 + 2];
    T bv = -std::numeric_limits<T>::infinity();
    int bi = N;
    for (int i = tid; i < N; i += kThreads) {
      const T dd = sq_dist(p[i * 3] - cx, p[i * 3 + 1] - cy, p[i * 3 + 2] - cz);
      const T m = dd < d[i] ? dd : d[i];
      d[i] = m;
      keep_max(bv, bi, m, i);
    }
    for (int off = 16; off > 0; off >>= 1) {
      const T ov = __shfl_down_sync(0xffffffff, bv, off);
      const int oi = __shfl_down_sync(0xffffffff, bi, off);
      keep_max(bv, bi, ov, oi);
    }
    if (lane == 0) {
      s_val[warp] = bv;
      s_idx[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
      bv = lane < kWarps ? s_val[lane] : -std::numeric_limits<T>::infinity();
      bi = lane < kWarps ? s_idx[lane] : N;
      for (int off = 16; off > 0; off >>= 1) {
        const T ov = __shfl_down_sync(0xffffffff, bv, off);
        const int oi = __shfl_down_sync(0xffffffff, bi, off);
        keep_max(bv, bi, ov, oi);
      }
      if (lane == 0) {
        s_far = bi;
        o[s] = bi;
      }
    }
    __syncthreads();
  }
}

template <typename T, int kThreads>
void launch(const torch::Tensor& pts, torch::Tensor& dist, torch::Tensor& idx, int N, int n) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  fps_kernel<T, kThreads><<<pts.size(0), kThreads, 0, stream>>>(
      pts.data_ptr<T>(), dist.data_ptr<T>(), idx.data_ptr<int64_t>(), N, n);
}

}  // namespace

torch::Tensor fps_cuda(torch::Tensor xyz, int64_t n) {
  TORCH_CHECK(xyz.is_cuda(), "fps_cuda: xyz must be a CUDA tensor");
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3, "fps_cuda: xyz must be (B, N, 3)");
  const at::cuda::OptionalCUDAGuard guard(xyz.device());
  auto pts = xyz.contiguous();
  const int64_t B = pts.size(0), N = pts.size(1);
  TORCH_CHECK(n >= 1 && n <= N && N < (1LL << 31), "fps_cuda: need 1 <= n <= N < 2^31");
  auto idx = torch::empty({B, n}, pts.options().dtype(torch::kLong));
  auto dist = torch::empty({B, N}, pts.options());
  if (B == 0) return idx;
  AT_DISPATCH_FLOATING_TYPES(pts.scalar_type(), "fps_cuda", [&] {
    // Small clouds do not fill 1024 threads; fewer threads means cheaper reductions per step.
    if (N <= 2048) launch<scalar_t, 256>(pts, dist, idx, N, n);
    else launch<scalar_t, 1024>(pts, dist, idx, N, n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return idx;
}
