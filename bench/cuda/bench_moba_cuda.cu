// attnkit_moba_cuda_bench: MoBA against the library's own full causal
// attention on the GPU (issue 6: N = 32k, 128k, 512k, 1M; Bs 4096, top_k 12,
// the MoBA paper's 1M setting), bf16, B = 1, Hq 8 / Hkv 2, D 128.
//
// Per N: full causal (the flash kernel at head dim 128) and MoBA through the
// public front door (CUDA events, median of the reps after a warm-up at the
// smallest N), the speed-up, the
// ideal speed-up for causal attention N / (2 * top_k * Bs), and one
// instrumented call's phases (CUDA events): gate (block means + selection;
// its share of the call is reported), lists (the one host synchronisation,
// list layout, head-major k / v), gathered (query rows gathered, flash calls
// over the chosen blocks, folds), own (the own-block flash call), merge.
// --configs Bs:top_k,... adds configurations; --sizes N,... ; --csv FILE.
#include <cuda_runtime.h>

#include <algorithm>
#include <attnkit/attention.hpp>
#include <attnkit/moba/moba.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"

using namespace attnkit;
using T = bfloat16;

using attnkit_bench::dev_random;
using attnkit_bench::ok;

namespace {

template <class F>
double median_ms(F&& call, int reps) {
  return attnkit_bench::median_event_ms(
      call, [] {}, reps, 0);
}

struct Problem {
  int64_t N, Hq = 8, Hkv = 2;
  static constexpr int64_t D = 128;
  T *q, *k, *v, *o;
  explicit Problem(int64_t n) : N(n) {
    q = dev_random<T>(size_t(N * Hq * D), 1);
    k = dev_random<T>(size_t(N * Hkv * D), 2);
    v = dev_random<T>(size_t(N * Hkv * D), 3);
    ok(cudaMalloc(&o, size_t(N * Hq * D) * sizeof(T)), "cudaMalloc");
  }
  ~Problem() { cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o); }
  Tensor4<const T> Q() const { return Tensor4<const T>(q, {1, N, Hq, D}); }
  Tensor4<const T> K() const { return Tensor4<const T>(k, {1, N, Hkv, D}); }
  Tensor4<const T> V() const { return Tensor4<const T>(v, {1, N, Hkv, D}); }
  Tensor4<T> O() const { return Tensor4<T>(o, {1, N, Hq, D}); }
  AttentionParams<T> params() const { return make_params<T>(Q(), K(), V(), O(), AttentionOptions{}, false); }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes{32768, 131072, 524288, 1048576};
  std::vector<MobaConfig> cfgs{{4096, 12}};
  FILE* csv = nullptr;
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--csv") && a + 1 < argc) csv = std::fopen(argv[++a], "w");
    if (!std::strcmp(argv[a], "--sizes") && a + 1 < argc) {  // comma-separated
      sizes.clear();
      for (char* s = std::strtok(argv[++a], ","); s; s = std::strtok(nullptr, ",")) sizes.push_back(std::atoll(s));
    }
    if (!std::strcmp(argv[a], "--configs") && a + 1 < argc) {  // Bs:top_k,Bs:top_k,...
      cfgs.clear();
      for (char* s = std::strtok(argv[++a], ","); s; s = std::strtok(nullptr, ",")) {
        const char* colon = std::strchr(s, ':');
        cfgs.push_back({std::atoll(s), colon ? std::atoll(colon + 1) : 3});
      }
    }
  }
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("attnkit_moba_cuda_bench: no usable CUDA device\n");
    return 77;
  }
  if (csv)
    std::fprintf(csv,
                 "N,Hq,Hkv,D,block,top_k,full_ms,moba_ms,speedup,ideal,gate_ms,lists_ms,gathered_ms,own_ms,merge_ms\n");
  {  // warm-up: every kernel once, at the smallest size
    Problem w(sizes.front());
    cuda::forward_hdim<128>(w.params(), CausalMask{}, nullptr);
    for (const MobaConfig& cfg : cfgs) attention(w.Q(), w.K(), w.V(), w.O(), cfg);
    ok(cudaDeviceSynchronize(), "warm-up");
  }
  std::printf("%-8s %5s %5s %9s %9s %8s %7s %8s | phases of one call, ms: %s\n", "N", "Bs", "top_k", "full ms",
              "moba ms", "speedup", "ideal", "of ideal", "gate (share) / lists / gathered / own / merge");
  for (const int64_t N : sizes) {
    Problem pr(N);
    const int reps = N >= 524288 ? 2 : 5;
    // Full causal: the same flash kernel the front door runs, at head dim 128
    // (called directly: the front door would compile every head dim and RoPE form).
    const AttentionParams<T> pf = pr.params();
    const double full = median_ms([&] { cuda::forward_hdim<128>(pf, CausalMask{}, nullptr); }, reps);
    for (const MobaConfig& cfg : cfgs) {
      const double moba = median_ms([&] { attention(pr.Q(), pr.K(), pr.V(), pr.O(), cfg); }, std::max(reps, 3));
      // One instrumented call: CUDA events between the phases.
      moba::cuda::detail::PhaseTimes t;
      {
        const AttentionParams<T> p = make_params<T>(pr.Q(), pr.K(), pr.V(), pr.O(), AttentionOptions{}, false);
        moba::cuda::detail::Run<T, 128> run(p, cfg, AttentionOptions{});
        run.gate(&t);
        run.attend(&t);
      }
      ok(cudaDeviceSynchronize(), "sync");
      const double ideal = double(N) / (2.0 * cfg.top_k * cfg.block_size);
      std::printf("%-8lld %5lld %5lld %9.2f %9.2f %7.2fx %6.2fx %7.0f%% | %.2f (%.1f%%) / %.2f / %.2f / %.2f / %.2f\n",
                  (long long)N, (long long)cfg.block_size, (long long)cfg.top_k, full, moba, full / moba, ideal,
                  100.0 * (full / moba) / ideal, t.gate, 100.0 * t.gate / moba, t.lists, t.gathered, t.own, t.merge);
      std::fflush(stdout);
      if (csv)
        std::fprintf(csv, "%lld,%lld,%lld,%lld,%lld,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", (long long)N,
                     (long long)pr.Hq, (long long)pr.Hkv, (long long)Problem::D, (long long)cfg.block_size,
                     (long long)cfg.top_k, full, moba, full / moba, ideal, t.gate, t.lists, t.gathered, t.own, t.merge);
    }
  }
  if (csv) std::fclose(csv);
  return 0;
}
