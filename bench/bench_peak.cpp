// Machine ceilings measured in the same binary as the attention benchmarks:
//   peak/fma_f32/<t>thread   register-resident independent FMA chains (xsimd)
//   peak/bf16_dot/<t>thread  vdpbf16ps chains (AVX512_BF16 only)
//   peak/read_bw/<t>thread   streaming read of a 1 GiB array
// Each records its result in the PeakRegistry (best value seen); attention
// benchmarks divide by these. If an attention benchmark runs first (e.g.
// --benchmark_filter=headline), the registry measures the peak on demand with
// measure_peak_now() below.
// GCC 12 false positive (bug 105593): `__m512 __Y = __Y;` in the AVX-512
// intrinsic headers warns once inlined. Silenced for these system headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "attnkit/compat/xsimd_compat.hpp"
#include "bench_common.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace attnkit_bench {
namespace {

// Runs f(thread_index) on `threads` threads (OpenMP when available).
template <class F>
void run_threads(int threads, F&& f) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    f(omp_get_thread_num());
    return;
  }
#endif
  (void)threads;
  f(0);
}

volatile float g_sink = 0.0f;
volatile float g_one = 0.99999994f;
volatile float g_eps = 1.0e-7f;

// ---- fp32 FMA ----------------------------------------------------------------
using fbatch = xsimd::batch<float>;
constexpr int kFmaChains = 16;  // >= FMA latency x pipes on any current x86/ARM core
constexpr int64_t kFmaInner = 1 << 20;

// Returns FLOPs executed: kFmaInner * kFmaChains * lanes * 2.
double fma_chains(int64_t inner) {
  const fbatch a(g_one), b(g_eps);
  fbatch acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = fbatch(static_cast<float>(c) * 1e-3f);
  for (int64_t n = 0; n < inner; ++n) {
#pragma GCC unroll 16
    for (int c = 0; c < kFmaChains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
  }
  fbatch s = acc[0];
  for (int c = 1; c < kFmaChains; ++c) s += acc[c];
  g_sink = g_sink + attnkit::simd::reduce_add(s);
  return static_cast<double>(inner) * kFmaChains * fbatch::size * 2.0;
}

// ---- bf16 dot (vdpbf16ps: 32 bf16 pairs -> 16 fp32 lanes, 2 FLOP per pair) ---
constexpr int kDotChains = 16;
#ifdef __AVX512BF16__
constexpr bool kHaveBf16Dot = true;
double bf16_chains(int64_t inner) {
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(g_eps * 1e4f), _mm512_set1_ps(g_eps * 1e4f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(g_one * 1e-3f), _mm512_set1_ps(g_one * 1e-3f));
  __m512 acc[kDotChains];
  for (int c = 0; c < kDotChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  for (int64_t n = 0; n < inner; ++n) {
#pragma GCC unroll 16
    for (int c = 0; c < kDotChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kDotChains; ++c) s = _mm512_add_ps(s, acc[c]);
  g_sink = g_sink + _mm512_reduce_add_ps(s);
  return static_cast<double>(inner) * kDotChains * 32 * 2.0;
}
#else
constexpr bool kHaveBf16Dot = false;
double bf16_chains(int64_t) { return 0.0; }
#endif

// ---- read bandwidth over a 1 GiB array ---------------------------------------
constexpr size_t kBwBytes = size_t(1) << 30;
constexpr size_t kBwFloats = kBwBytes / sizeof(float);

struct BwBuffer {
  float* data = nullptr;
  BwBuffer() {
    data = static_cast<float*>(std::aligned_alloc(64, kBwBytes));
    if (!data) {
      std::fprintf(stderr, "attnkit_bench: cannot allocate 1 GiB for the bandwidth benchmark\n");
      std::abort();
    }
    // First touch with two threads (same partition as the readers), with
    // pseudo-random contents so that no two pages are identical (a host that
    // merges identical pages would otherwise serve the array from one page).
#ifdef _OPENMP
#pragma omp parallel num_threads(2)
#endif
    {
#ifdef _OPENMP
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
      const int t = 0, nt = 1;
#endif
      const size_t per = kBwFloats / static_cast<size_t>(nt);
      const size_t begin = per * static_cast<size_t>(t), end = t == nt - 1 ? kBwFloats : begin + per;
      Rng r(0x5eed + static_cast<uint64_t>(t));
      for (size_t n = begin; n < end; ++n) data[n] = r.uniform();
    }
  }
  ~BwBuffer() { std::free(data); }
};
BwBuffer& bw_buffer() {
  static BwBuffer b;
  return b;
}

// Sum of [begin, end) with 8 independent vector accumulators.
float read_range(const float* p, size_t begin, size_t end) {
  constexpr size_t L = fbatch::size;
  fbatch acc[8];
  for (auto& a : acc) a = fbatch(0.0f);
  size_t n = begin;
  for (; n + 8 * L <= end; n += 8 * L) {
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) acc[c] += fbatch::load_aligned(p + n + c * L);
  }
  float tail = 0.0f;
  for (; n < end; ++n) tail += p[n];
  fbatch s = acc[0];
  for (int c = 1; c < 8; ++c) s += acc[c];
  return attnkit::simd::reduce_add(s) + tail;
}

// One pass over the whole array on `threads` threads; returns seconds.
double read_pass(int threads) {
  const float* p = bw_buffer().data;
  float partial[64] = {};
  const auto t0 = Clock::now();
  run_threads(threads, [&](int t) {
    // Chunks aligned to 64 floats (256 B) so every load stays aligned.
    const size_t per = (kBwFloats / threads) & ~size_t(63);
    const size_t begin = per * t, end = t == threads - 1 ? kBwFloats : begin + per;
    partial[t] = read_range(p, begin, end);
  });
  const double sec = seconds_since(t0);
  float s = 0;
  for (int t = 0; t < threads; ++t) s += partial[t];
  g_sink = g_sink + s;
  return sec;
}

// FLOPs of `threads` threads each running `chain(inner)`; returns GFLOP/s.
template <class Chain>
double chain_gflops(Chain chain, int threads, int64_t inner) {
  double flops[64] = {};
  const auto t0 = Clock::now();
  run_threads(threads, [&](int t) { flops[t] = chain(inner); });
  const double sec = seconds_since(t0);
  double total = 0;
  for (int t = 0; t < threads; ++t) total += flops[t];
  return total / sec * 1e-9;
}

}  // namespace

double measure_peak_now(PeakKind kind, int threads) {
  double best = 0.0;
  switch (kind) {
    case PeakKind::fma_f32:
      // Many short bursts (~1 ms): the best one is the least disturbed by
      // other processes on a shared machine.
      for (int r = 0; r < 40; ++r) best = std::max(best, chain_gflops(fma_chains, threads, kFmaInner / 4));
      break;
    case PeakKind::bf16_dot:
      if (!kHaveBf16Dot) return 0.0;
      for (int r = 0; r < 40; ++r) best = std::max(best, chain_gflops(bf16_chains, threads, kFmaInner / 4));
      break;
    case PeakKind::read_bw:
      read_pass(threads);  // warm-up (and first touch on first use)
      for (int r = 0; r < 4; ++r) best = std::max(best, static_cast<double>(kBwBytes) / read_pass(threads) * 1e-9);
      break;
  }
  return best;
}

namespace {

void BM_peak_fma(benchmark::State& st, int threads) {
  double flops = 0;
  const auto t0 = Clock::now();
  for (auto _ : st) {
    double f[64] = {};
    run_threads(threads, [&](int t) { f[t] = fma_chains(kFmaInner); });
    for (int t = 0; t < threads; ++t) flops += f[t];
  }
  const double gflops = flops / seconds_since(t0) * 1e-9;
  st.counters["gflops"] = gflops;
  st.counters["per_core"] = gflops / threads;
  PeakRegistry::instance().record(PeakKind::fma_f32, threads, gflops);
}

void BM_peak_bf16(benchmark::State& st, int threads) {
  if (!kHaveBf16Dot) {
    st.SkipWithError("built without AVX512_BF16");
    for (auto _ : st) {
    }
    return;
  }
  double flops = 0;
  const auto t0 = Clock::now();
  for (auto _ : st) {
    double f[64] = {};
    run_threads(threads, [&](int t) { f[t] = bf16_chains(kFmaInner); });
    for (int t = 0; t < threads; ++t) flops += f[t];
  }
  const double gflops = flops / seconds_since(t0) * 1e-9;
  st.counters["gflops"] = gflops;
  st.counters["per_core"] = gflops / threads;
  PeakRegistry::instance().record(PeakKind::bf16_dot, threads, gflops);
}

void BM_peak_read_bw(benchmark::State& st, int threads) {
  read_pass(threads);  // first touch / warm-up outside the timing
  double sec = 0;
  int64_t passes = 0;
  for (auto _ : st) {
    sec += read_pass(threads);
    ++passes;
  }
  const double gbps = static_cast<double>(kBwBytes) * static_cast<double>(passes) / sec * 1e-9;
  st.counters["gbps"] = gbps;
  PeakRegistry::instance().record(PeakKind::read_bw, threads, gbps);
}

[[maybe_unused]] const bool registered = [] {
  for (int t : {1, 2}) {
    const std::string suffix = t == 1 ? "1thread" : std::to_string(t) + "threads";
    benchmark::RegisterBenchmark(("peak/fma_f32/" + suffix).c_str(), BM_peak_fma, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("peak/bf16_dot/" + suffix).c_str(), BM_peak_bf16, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("peak/read_bw/" + suffix).c_str(), BM_peak_read_bw, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(1.0);
  }
  return true;
}();

}  // namespace
}  // namespace attnkit_bench
