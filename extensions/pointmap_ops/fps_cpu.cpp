// Farthest point sampling on the CPU: the exact arithmetic of pointmap.ops.fps_ref, with pruning.
//
// Distances are dx*dx + dy*dy + dz*dz evaluated left to right without fused multiply-add (the
// extension is built with -ffp-contract=off), so every running min-distance equals the PyTorch
// reference bit for bit and the indices are the same, ties going to the lowest index.
//
// Speed comes from skipping work that cannot change anything: points are sorted along a Morton curve
// and cut into small blocks with a bounding box each. When the new center's squared distance to a
// block's box is at least the largest running distance inside the block, no point of the block can get
// closer, so the block is skipped. Rounding is monotonic, so the bound computed in floating point is
// never above a point's own computed distance: the pruning is exact, not approximate.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;

inline uint64_t spread3(uint64_t v) {  // 10 bits -> every third bit
  v &= 0x3ff;
  v = (v | (v << 16)) & 0x030000FF;
  v = (v | (v << 8)) & 0x0300F00F;
  v = (v | (v << 4)) & 0x030C30C3;
  v = (v | (v << 2)) & 0x09249249;
  return v;
}

template <typename T>
inline T gap(T lo, T hi, T c) {
  const T a = lo - c, b = c - hi;
  return a > 0 ? a : (b > 0 ? b : T(0));
}

template <typename T>
void fps_one(const T* p, int64_t N, int64_t n, int64_t* out) {
  // Morton order of the points inside their bounding box.
  T lo[3], hi[3];
  for (int a = 0; a < 3; ++a) lo[a] = hi[a] = p[a];
  for (int64_t i = 1; i < N; ++i)
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::min(lo[a], p[3 * i + a]);
      hi[a] = std::max(hi[a], p[3 * i + a]);
    }
  std::vector<uint64_t> code(N);
  for (int64_t i = 0; i < N; ++i) {
    uint64_t c = 0;
    for (int a = 0; a < 3; ++a) {
      const double ext = static_cast<double>(hi[a]) - static_cast<double>(lo[a]);
      const double q = ext > 0 ? (static_cast<double>(p[3 * i + a]) - lo[a]) / ext * 1023.0 : 0.0;
      c |= spread3(static_cast<uint64_t>(q)) << a;
    }
    code[i] = c;
  }
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return code[a] < code[b]; });

  std::vector<T> x(N), y(N), z(N), dist(N, std::numeric_limits<T>::infinity());
  std::vector<int64_t> pos_of(N);  // original index -> sorted position
  for (int64_t k = 0; k < N; ++k) {
    const int64_t i = order[k];
    x[k] = p[3 * i];
    y[k] = p[3 * i + 1];
    z[k] = p[3 * i + 2];
    pos_of[i] = k;
  }
  const int64_t nb = (N + kBlock - 1) / kBlock;
  std::vector<T> bmin(nb * 3), bmax(nb * 3), bdist(nb, std::numeric_limits<T>::infinity());
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t k0 = b * kBlock, k1 = std::min(N, k0 + kBlock);
    T l[3] = {x[k0], y[k0], z[k0]}, h[3] = {x[k0], y[k0], z[k0]};
    for (int64_t k = k0 + 1; k < k1; ++k) {
      l[0] = std::min(l[0], x[k]); h[0] = std::max(h[0], x[k]);
      l[1] = std::min(l[1], y[k]); h[1] = std::max(h[1], y[k]);
      l[2] = std::min(l[2], z[k]); h[2] = std::max(h[2], z[k]);
    }
    for (int a = 0; a < 3; ++a) {
      bmin[3 * b + a] = l[a];
      bmax[3 * b + a] = h[a];
    }
  }

  int64_t far = 0;  // original index
  out[0] = 0;
  for (int64_t s = 1; s < n; ++s) {
    const int64_t fk = pos_of[far];
    const T cx = x[fk], cy = y[fk], cz = z[fk];
    T best = -std::numeric_limits<T>::infinity();
    for (int64_t b = 0; b < nb; ++b) {
      const T gx = gap(bmin[3 * b], bmax[3 * b], cx);
      const T gy = gap(bmin[3 * b + 1], bmax[3 * b + 1], cy);
      const T gz = gap(bmin[3 * b + 2], bmax[3 * b + 2], cz);
      const T bound = gx * gx + gy * gy + gz * gz;
      if (bound < bdist[b]) {
        const int64_t k0 = b * kBlock, k1 = std::min(N, k0 + kBlock);
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t k = k0; k < k1; ++k) {
          const T dx = x[k] - cx, dy = y[k] - cy, dz = z[k] - cz;
          const T d = dx * dx + dy * dy + dz * dz;
          const T v = d < dist[k] ? d : dist[k];
          dist[k] = v;
          m = v > m ? v : m;
        }
        bdist[b] = m;
      }
      best = bdist[b] > best ? bdist[b] : best;
    }
    // The lowest original index among the points holding the maximum (blocks are in Morton order).
    int64_t pick = N;
    for (int64_t b = 0; b < nb; ++b) {
      if (bdist[b] != best) continue;
      const int64_t k0 = b * kBlock, k1 = std::min(N, k0 + kBlock);
      for (int64_t k = k0; k < k1; ++k)
        if (dist[k] == best && order[k] < pick) pick = order[k];
    }
    far = pick;
    out[s] = far;
  }
}

}  // namespace

torch::Tensor fps_cpu(torch::Tensor xyz, int64_t n) {
  TORCH_CHECK(xyz.device().is_cpu(), "fps_cpu: xyz must be on the CPU");
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3, "fps_cpu: xyz must be (B, N, 3)");
  auto pts = xyz.contiguous();
  const int64_t B = pts.size(0), N = pts.size(1);
  TORCH_CHECK(n >= 1 && n <= N, "fps_cpu: n must be in [1, N]");
  auto idx = torch::empty({B, n}, pts.options().dtype(torch::kLong));
  int64_t* out = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(pts.scalar_type(), "fps_cpu", [&] {
    const scalar_t* p = pts.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) fps_one<scalar_t>(p + b * N * 3, N, n, out + b * n);
    });
  });
  return idx;
}
