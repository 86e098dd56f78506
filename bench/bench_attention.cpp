// Attention benchmarks of issue 3 (CPU kernel through the front door):
//   headline/1..5           the five target shapes (--benchmark_filter=headline)
//   masks/<mask>/<strategy>/<N>
//     strategy dense              materialised additive [N, N] mask inside the fused kernel
//              functor_all_tiles  the functor mask, every tile visited (attnkit::untiled)
//              functor_skip       the functor mask with tile classification (skips empty tiles)
// Counters: gflops (DESIGN §8: only allowed pairs count, whatever the strategy
// computes), peak_frac vs the fp32 FMA peak measured in this binary at the same
// thread count, bf16_peak_frac (bf16 storage) vs the bf16-dot peak, gbps and
// bw_frac (decode: K+V bytes vs the measured read bandwidth), vs_causal.
#if __has_include("attnkit/cpu/forward.hpp")

// GCC 12 false positive (bug 105593): `__m512 __Y = __Y;` in the AVX-512
// intrinsic headers warns once inlined into the kernels. Silenced for these
// system headers only (the warning's location is inside them).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <cstdlib>
#include <string>

#include "attnkit/attention.hpp"
#include "bench_common.hpp"

namespace attnkit_bench {
namespace {

template <class T, class Mask>
void call(Problem<T>& p, const Mask& mask, int threads) {
  attnkit::AttentionOptions o;
  o.num_threads = threads;
  attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), mask, o);
}

// Times the loop and sets gflops / peak_frac (/ bf16_peak_frac); returns
// seconds per call.
template <class T, class Mask>
double timed_loop(benchmark::State& st, Problem<T>& p, const Mask& mask, int threads, int64_t allowed_pairs) {
  const auto t0 = Clock::now();
  for (auto _ : st) {
    call(p, mask, threads);
    benchmark::ClobberMemory();
  }
  const double sec = seconds_since(t0) / static_cast<double>(st.iterations());
  set_compute_counters<T>(st, attention_flops(p.s, allowed_pairs), sec, threads);
  return sec;
}

// ---- headline ------------------------------------------------------------------

template <class T>
void BM_prefill_causal(benchmark::State& st) {
  const Shape s{1, 2048, 2048, 32, 8, 128, 128};
  Problem<T> p(s);
  const attnkit::CausalMask mask;
  const int64_t pairs = cached_pairs("causal/" + shape_key(s), [&] { return count_allowed_pairs(mask, s); });
  timed_loop(st, p, mask, 2, pairs);
}

void BM_full_1thread(benchmark::State& st) {
  const Shape s{1, 4096, 4096, 8, 8, 128, 128};
  Problem<float> p(s);
  const attnkit::FullMask mask;
  const int64_t pairs = cached_pairs("full/" + shape_key(s), [&] { return count_allowed_pairs(mask, s); });
  timed_loop(st, p, mask, 1, pairs);
}

void BM_decode(benchmark::State& st) {
  // One new token over a 32768-token KV cache. Causal with bottom-right
  // alignment = every key (what a model's decode step calls).
  const Shape s{1, 1, 32768, 32, 8, 128, 128};
  Problem<float> p(s);
  const attnkit::CausalMask mask;
  const int64_t pairs = cached_pairs("causal/" + shape_key(s), [&] { return count_allowed_pairs(mask, s); });
  const double sec = timed_loop(st, p, mask, 2, pairs);
  set_bandwidth_counters(st, p.kv_bytes(), sec, 2);
}

void BM_window_vs_causal(benchmark::State& st) {
  const Shape s{1, 16384, 16384, 8, 8, 128, 128};
  Problem<float> p(s);
  const attnkit::SlidingWindowMask window(512);
  const attnkit::CausalMask causal;
  const int64_t pairs = cached_pairs("window512/" + shape_key(s), [&] { return count_allowed_pairs(window, s); });
  // Causal at the same shape, timed in this same benchmark run (once per
  // invocation: it costs ~16x a window call).
  const auto tc = Clock::now();
  call(p, causal, 2);
  const double causal_sec = seconds_since(tc);
  const double sec = timed_loop(st, p, window, 2, pairs);
  st.counters["vs_causal"] = sec / causal_sec;
  st.counters["causal_ms"] = causal_sec * 1e3;
}

// ---- mask strategies -----------------------------------------------------------

enum class Strategy { dense, functor_all_tiles, functor_skip };
const char* strategy_name(Strategy g) {
  return g == Strategy::dense ? "dense" : g == Strategy::functor_all_tiles ? "functor_all_tiles" : "functor_skip";
}

constexpr int kMaskThreads = 2;
Shape mask_shape(int64_t N) { return Shape{1, N, N, 8, 2, 128, 128}; }

void BM_mask_strategy(benchmark::State& st, MaskId m, Strategy g, int64_t N) {
  const Shape s = mask_shape(N);
  Problem<float> p(s);
  const int64_t pairs = mask_pairs(m, s);  // same allowed set for every strategy
  st.counters["density"] = static_cast<double>(pairs) / (static_cast<double>(s.Hq) * N * N);
  if (g == Strategy::dense) {
    const std::vector<float>& bias = additive_mask(m, N);
    timed_loop(st, p, attnkit::AdditiveMask(bias.data(), N), kMaskThreads, pairs);
  } else {
    with_mask(m, N, [&](const auto& mask) {
      if (g == Strategy::functor_all_tiles)
        timed_loop(st, p, attnkit::untiled(mask), kMaskThreads, pairs);
      else
        timed_loop(st, p, mask, kMaskThreads, pairs);
      return 0;
    });
  }
}

// Largest N for the dense strategy: ATTNKIT_BENCH_DENSE_MAX_N (default 16384;
// the [16384, 16384] float mask is 1 GiB).
int64_t dense_max_n() {
  const char* e = std::getenv("ATTNKIT_BENCH_DENSE_MAX_N");
  return e ? std::atoll(e) : 16384;
}

[[maybe_unused]] const bool registered = [] {
  using benchmark::RegisterBenchmark;
  RegisterBenchmark("headline/1_prefill_f32_causal", BM_prefill_causal<float>)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  RegisterBenchmark("headline/2_prefill_bf16_causal", BM_prefill_causal<attnkit::bfloat16>)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  RegisterBenchmark("headline/3_full_f32_1thread", BM_full_1thread)->UseRealTime()->Unit(benchmark::kMillisecond);
  RegisterBenchmark("headline/4_decode_f32", BM_decode)->UseRealTime()->Unit(benchmark::kMillisecond);
  RegisterBenchmark("headline/5_window512_f32", BM_window_vs_causal)->UseRealTime()->Unit(benchmark::kMillisecond);

  for (MaskId m : kAllMasks)
    for (int64_t N : {1024, 2048, 4096, 8192, 16384})
      for (Strategy g : {Strategy::dense, Strategy::functor_all_tiles, Strategy::functor_skip}) {
        if (g == Strategy::dense && N > dense_max_n()) continue;
        const std::string name =
            std::string("masks/") + mask_name(m) + "/" + strategy_name(g) + "/" + std::to_string(N);
        // Iterations are automatic: a call that takes longer than the minimum
        // time (0.5 s) runs exactly once.
        RegisterBenchmark(name.c_str(), BM_mask_strategy, m, g, N)->UseRealTime()->Unit(benchmark::kMillisecond);
      }
  return true;
}();

}  // namespace
}  // namespace attnkit_bench

#endif  // __has_include("attnkit/cpu/forward.hpp")
