// The careful Eigen materialised baseline, masks/<mask>/eigen/<N> (N <= 4096):
// per query head, S = (scale * Q) K^T as one GEMM (the scale is folded into Q
// so Eigen keeps the product a GEMM; `(Q * K^T) * scale` makes Eigen evaluate
// element by element), the materialised additive mask added row by row inside
// the softmax pass, exp, row sums, then O = P V (GEMM) and a division by the
// row sums. Heads run in parallel with OpenMP (Eigen's own GEMM threading is
// switched off so 1 thread means 1 thread). Same problems and counters as the
// fused-kernel mask benchmarks; FLOPs count only allowed pairs.
// GCC 12 false positive (bug 105593): `__m512 __Y = __Y;` in the AVX-512
// intrinsic headers warns once inlined. Silenced for these system headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <Eigen/Dense>
#pragma GCC diagnostic pop
#include <string>
#include <vector>

#include "bench_common.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace attnkit_bench {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using MMap = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

struct Workspace {
  RowMat qs, s;
  Eigen::VectorXf rowsum;
};

// out [1, N, Hq, Dv] = softmax(scale * Q K^T + bias) V, bias [Sq, Sk] additive.
void eigen_attention(const Problem<float>& p, float* out, const float* bias, int threads, std::vector<Workspace>& ws) {
  const Shape& s = p.s;
  const int64_t group = s.Hq / s.Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.D));
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
  for (int64_t h = 0; h < s.Hq; ++h) {
#ifdef _OPENMP
    Workspace& w = ws[static_cast<size_t>(omp_get_thread_num())];
#else
    Workspace& w = ws[0];
#endif
    const int64_t kvh = h / group;
    const CMap Q(p.q.data() + h * s.D, s.Sq, s.D, Eigen::OuterStride<>(s.Hq * s.D));
    const CMap K(p.k.data() + kvh * s.D, s.Sk, s.D, Eigen::OuterStride<>(s.Hkv * s.D));
    const CMap V(p.v.data() + kvh * s.Dv, s.Sk, s.Dv, Eigen::OuterStride<>(s.Hkv * s.Dv));
    MMap O(out + h * s.Dv, s.Sq, s.Dv, Eigen::OuterStride<>(s.Hq * s.Dv));

    w.qs.noalias() = Q * scale;
    w.s.noalias() = w.qs * K.transpose();
    for (int64_t r = 0; r < s.Sq; ++r) {
      auto row = w.s.row(r).array();
      if (bias) {
        const Eigen::Map<const Eigen::ArrayXf> b(bias + r * s.Sk, s.Sk);
        row += b.transpose();
      }
      const float m = row.maxCoeff();  // every row here has >= 1 allowed key
      row = (row - m).exp();
      w.rowsum[r] = row.sum();
    }
    O.noalias() = w.s * V;
    O.array().colwise() /= w.rowsum.array();
  }
}

void BM_eigen_mask(benchmark::State& st, MaskId m, int64_t N, int threads) {
  Eigen::setNbThreads(1);
  const Shape s{1, N, N, 8, 2, 128, 128};
  Problem<float> p(s);
  const int64_t pairs = mask_pairs(m, s);
  const std::vector<float>& bias = additive_mask(m, N);
  std::vector<Workspace> ws(static_cast<size_t>(threads));
  for (auto& w : ws) {
    w.qs.resize(N, s.D);
    w.s.resize(N, N);
    w.rowsum.resize(N);
  }
  st.counters["density"] = static_cast<double>(pairs) / (static_cast<double>(s.Hq) * N * N);
  const auto t0 = Clock::now();
  for (auto _ : st) {
    eigen_attention(p, p.out.data(), bias.data(), threads, ws);
    benchmark::ClobberMemory();
  }
  const double sec = seconds_since(t0) / static_cast<double>(st.iterations());
  set_compute_counters<float>(st, attention_flops(s, pairs), sec, threads);
}

[[maybe_unused]] const bool registered = [] {
  for (MaskId m : kAllMasks)
    for (int64_t N : {1024, 2048, 4096}) {
      const std::string name = std::string("masks/") + mask_name(m) + "/eigen/" + std::to_string(N);
      benchmark::RegisterBenchmark(name.c_str(), BM_eigen_mask, m, N, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  return true;
}();

}  // namespace
}  // namespace attnkit_bench
