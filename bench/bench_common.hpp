// Shared helpers of attnkit_bench: problem setup, exact FLOP counting
// (DESIGN §8: only allowed (i, j) pairs count) and a process-wide registry of
// the machine peaks measured by bench_peak.cpp, against which the attention
// benchmarks report peak_frac / bw_frac / bf16_peak_frac.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/attnkit.hpp"

namespace attnkit_bench {

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------
using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------
// Random problems in BSHD layout
// ---------------------------------------------------------------------------

// splitmix64: fast enough to fill hundreds of MB per benchmark setup.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float uniform() { return static_cast<float>(static_cast<int64_t>(next() >> 40) - (1 << 23)) * (1.0f / (1 << 23)); }
};

template <class T>
void fill_random(std::vector<T>& x, uint64_t seed) {
  Rng r(seed);
  for (auto& e : x) e = attnkit::from_float<T>(r.uniform());
}

struct Shape {
  int64_t B = 1, Sq = 0, Sk = 0, Hq = 1, Hkv = 1, D = 128, Dv = 128;
};

// q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], out [B, Sq, Hq, Dv],
// contiguous BSHD.
template <class T>
struct Problem {
  Shape s;
  std::vector<T> q, k, v, out;

  explicit Problem(const Shape& shape, uint64_t seed = 1234) : s(shape) {
    q.resize(static_cast<size_t>(s.B * s.Sq * s.Hq * s.D));
    k.resize(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.D));
    v.resize(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.Dv));
    out.assign(static_cast<size_t>(s.B * s.Sq * s.Hq * s.Dv), attnkit::from_float<T>(0.0f));
    fill_random(q, seed);
    fill_random(k, seed + 1);
    fill_random(v, seed + 2);
  }
  attnkit::Tensor4<const T> qv() const { return attnkit::Tensor4<const T>(q.data(), {s.B, s.Sq, s.Hq, s.D}); }
  attnkit::Tensor4<const T> kv() const { return attnkit::Tensor4<const T>(k.data(), {s.B, s.Sk, s.Hkv, s.D}); }
  attnkit::Tensor4<const T> vv() const { return attnkit::Tensor4<const T>(v.data(), {s.B, s.Sk, s.Hkv, s.Dv}); }
  attnkit::Tensor4<T> ov() { return attnkit::Tensor4<T>(out.data(), {s.B, s.Sq, s.Hq, s.Dv}); }

  // Bytes of K and V (what a decode step must stream from memory).
  double kv_bytes() const {
    return static_cast<double>(s.B) * static_cast<double>(s.Sk) * static_cast<double>(s.Hkv) *
           static_cast<double>(s.D + s.Dv) * sizeof(T);
  }
};

// ---------------------------------------------------------------------------
// Exact FLOP counting (DESIGN §8)
// ---------------------------------------------------------------------------

// Allowed (i, j) pairs of one sequence (batch b, query head h) with Lq queries
// and Lk keys. Uses the mask's own tile classification: empty tiles add 0,
// full tiles add their area, and only partial tiles are visited element by
// element. Classification is sound by contract (Full = every pair allowed,
// Empty = none), so the count is exact for any mask; it is cheap for masks
// whose classification is exact (all built-ins), O(Lq*Lk) only for masks that
// classify everything as Partial (dense/custom) — don't count with those.
template <class Mask>
int64_t count_allowed_pairs_seq(const Mask& mask, int64_t b, int64_t h, int64_t Lq, int64_t Lk,
                                attnkit::Alignment align = attnkit::Alignment::BottomRight, int64_t tile = 64) {
  const attnkit::SeqCtx ctx = attnkit::SeqCtx::make(b, h, Lq, Lk, align);
  int64_t n = 0;
  for (int64_t i0 = 0; i0 < Lq; i0 += tile) {
    const int64_t i1 = std::min(i0 + tile, Lq);
    for (int64_t j0 = 0; j0 < Lk; j0 += tile) {
      const int64_t j1 = std::min(j0 + tile, Lk);
      const attnkit::TileKind kind = mask.classify(ctx, i0, i1, j0, j1);
      if (kind == attnkit::TileKind::Empty) continue;
      if (kind == attnkit::TileKind::Full) {
        n += (i1 - i0) * (j1 - j0);
        continue;
      }
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) n += mask(ctx, i, j) ? 1 : 0;
    }
  }
  return n;
}

// Allowed pairs summed over batch and query heads. `head_dependent` = false
// (every built-in mask) counts head 0 and multiplies by Hq.
template <class Mask>
int64_t count_allowed_pairs(const Mask& mask, const Shape& s,
                            attnkit::Alignment align = attnkit::Alignment::BottomRight, bool head_dependent = false) {
  int64_t n = 0;
  for (int64_t b = 0; b < s.B; ++b) {
    if (head_dependent) {
      for (int64_t h = 0; h < s.Hq; ++h) n += count_allowed_pairs_seq(mask, b, h, s.Sq, s.Sk, align);
    } else {
      n += s.Hq * count_allowed_pairs_seq(mask, b, 0, s.Sq, s.Sk, align);
    }
  }
  return n;
}

// Per-process cache: key (mask name + shape) -> allowed pairs, so a benchmark
// re-entered by Google Benchmark counts once.
template <class F>
int64_t cached_pairs(const std::string& key, F&& compute) {
  static std::mutex mu;
  static std::map<std::string, int64_t> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const int64_t n = compute();
  std::lock_guard<std::mutex> lock(mu);
  cache[key] = n;
  return n;
}

inline std::string shape_key(const Shape& s) {
  return "B" + std::to_string(s.B) + "_Sq" + std::to_string(s.Sq) + "_Sk" + std::to_string(s.Sk) + "_Hq" +
         std::to_string(s.Hq) + "_D" + std::to_string(s.D) + "_Dv" + std::to_string(s.Dv);
}

// FLOPs of one call: 2 * (D + Dv) * allowed pairs (summed over B and Hq).
inline double attention_flops(const Shape& s, int64_t allowed_pairs) {
  return 2.0 * static_cast<double>(s.D + s.Dv) * static_cast<double>(allowed_pairs);
}

// ---------------------------------------------------------------------------
// The mask-strategy suite (issue 3): five masks over square N x N problems
// ---------------------------------------------------------------------------
enum class MaskId { causal, window, prefix_lm, document, sink_window };
constexpr MaskId kAllMasks[] = {MaskId::causal, MaskId::window, MaskId::prefix_lm, MaskId::document,
                                MaskId::sink_window};
constexpr int64_t kWindow = 512;  // sliding window and sink+window
constexpr int64_t kSinks = 4;
constexpr int64_t kDocs = 4;  // document: 4 equal documents, & causal

inline const char* mask_name(MaskId m) {
  switch (m) {
    case MaskId::causal:
      return "causal";
    case MaskId::window:
      return "window512";
    case MaskId::prefix_lm:
      return "prefix_lm";
    case MaskId::document:
      return "document";
    case MaskId::sink_window:
      return "sink_window";
  }
  return "?";
}

// Document ids for N tokens in kDocs equal documents (kept alive per N).
inline const int32_t* doc_ids(int64_t N) {
  static std::mutex mu;
  static std::map<int64_t, std::vector<int32_t>> ids;
  std::lock_guard<std::mutex> lock(mu);
  auto& v = ids[N];
  if (v.empty()) {
    v.resize(static_cast<size_t>(N));
    const int64_t len = (N + kDocs - 1) / kDocs;
    for (int64_t j = 0; j < N; ++j) v[static_cast<size_t>(j)] = static_cast<int32_t>(j / len);
  }
  return v.data();
}

// Calls f(mask) with the functor mask `m` for sequence length N.
template <class F>
decltype(auto) with_mask(MaskId m, int64_t N, F&& f) {
  switch (m) {
    case MaskId::window:
      return f(attnkit::SlidingWindowMask(kWindow));
    case MaskId::prefix_lm:
      return f(attnkit::PrefixLMMask(N / 4));
    case MaskId::document:
      return f(attnkit::DocumentMask(doc_ids(N)) & attnkit::CausalMask{});
    case MaskId::sink_window:
      return f(attnkit::SinkWindowMask(kSinks, kWindow));
    case MaskId::causal:
      break;
  }
  return f(attnkit::CausalMask{});
}

// Allowed pairs of mask m over shape s (cached per mask and shape).
inline int64_t mask_pairs(MaskId m, const Shape& s) {
  return cached_pairs(std::string(mask_name(m)) + "/" + shape_key(s), [&] {
    return with_mask(m, s.Sk, [&](const auto& mask) { return count_allowed_pairs(mask, s); });
  });
}

// The materialised [N, N] additive mask (0 allowed, -inf masked) of mask m.
// One entry is cached (the dense strategy and the Eigen baseline of the same
// mask and N run back to back); a new request frees the previous one first.
inline const std::vector<float>& additive_mask(MaskId m, int64_t N) {
  static std::mutex mu;
  static std::pair<int, int64_t> key{-1, 0};
  static std::vector<float> cached;
  std::lock_guard<std::mutex> lock(mu);
  if (key != std::make_pair(static_cast<int>(m), N)) {
    std::vector<float>().swap(cached);
    cached = with_mask(m, N, [&](const auto& mask) { return attnkit::dense_mask_additive(mask, N, N); });
    key = {static_cast<int>(m), N};
  }
  return cached;
}

// ---------------------------------------------------------------------------
// Registry of measured peaks (filled by bench_peak.cpp's microbenchmarks, or
// measured on demand the first time an attention benchmark needs one)
// ---------------------------------------------------------------------------
enum class PeakKind { fma_f32 = 0, bf16_dot = 1, read_bw = 2 };

// Quick measurements used when a peak is needed before its microbenchmark ran
// (e.g. under --benchmark_filter=headline). Defined in bench_peak.cpp.
// Return GFLOP/s (fma_f32, bf16_dot; 0 if unsupported) or GB/s (read_bw).
double measure_peak_now(PeakKind kind, int threads);

class PeakRegistry {
 public:
  static PeakRegistry& instance() {
    static PeakRegistry r;
    return r;
  }
  // Says on stderr which peaks this process measured and divided by (stdout
  // stays clean for --benchmark_format=json).
  ~PeakRegistry() {
    if (values_.empty()) return;
    static const char* names[] = {"fma_f32 GFLOP/s", "bf16_dot GFLOP/s", "read_bw GB/s"};
    std::fprintf(stderr, "attnkit_bench: peaks measured in this process (best seen at exactly that thread count):");
    for (const auto& kv : values_)
      std::fprintf(stderr, " [%s, %d thread%s] %.1f", names[kv.first.first], kv.first.second,
                   kv.first.second == 1 ? "" : "s", kv.second);
    std::fprintf(stderr, "\n");
  }
  // Keep the best value seen: a peak is a ceiling, noise only lowers it.
  void record(PeakKind kind, int threads, double value) {
    std::lock_guard<std::mutex> lock(mu_);
    double& v = values_[{static_cast<int>(kind), threads}];
    if (value > v) v = value;
  }
  // The peak to divide by at `threads` threads: the best measured value, with
  // two conservative floors for a machine shared with other processes (a busy
  // core hurts a 2-thread measurement most): the FMA and bf16-dot peaks are at
  // least `threads` x the 1-thread peak (these units are per core), and read
  // bandwidth at least the 1-thread bandwidth. Floors only raise the
  // denominator, so they can only lower peak_frac / bw_frac.
  double get(PeakKind kind, int threads) {
    double v = measured(kind, threads);
    if (threads > 1) {
      const double one = measured(kind, 1);
      v = std::max(v, kind == PeakKind::read_bw ? one : threads * one);
    }
    return v;
  }
  // The best value measured at exactly `threads` threads (measured now if
  // nothing was recorded yet).
  double measured(PeakKind kind, int threads) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = values_.find({static_cast<int>(kind), threads});
      if (it != values_.end()) return it->second;
    }
    const double v = measure_peak_now(kind, threads);
    record(kind, threads, v);
    return v;
  }

 private:
  std::mutex mu_;
  std::map<std::pair<int, int>, double> values_;
};

inline double fma_peak_gflops(int threads) { return PeakRegistry::instance().get(PeakKind::fma_f32, threads); }
inline double bf16_peak_gflops(int threads) { return PeakRegistry::instance().get(PeakKind::bf16_dot, threads); }
inline double read_bw_gbps(int threads) { return PeakRegistry::instance().get(PeakKind::read_bw, threads); }

// Sets gflops / peak_frac (and bf16_peak_frac for bf16 storage) from the
// FLOPs of one call and the measured seconds per call.
template <class T>
void set_compute_counters(benchmark::State& st, double flops_per_call, double sec_per_call, int threads) {
  const double gflops = flops_per_call / sec_per_call * 1e-9;
  const double peak = fma_peak_gflops(threads);
  st.counters["gflops"] = gflops;
  st.counters["peak_frac"] = gflops / peak;
  st.counters["peak_ref"] = peak;  // the denominator, so a peak measured under load shows
  if constexpr (std::is_same_v<T, attnkit::bfloat16>) {
    const double p = bf16_peak_gflops(threads);
    if (p > 0) {
      st.counters["bf16_peak_frac"] = gflops / p;
      st.counters["bf16_ref"] = p;
    }
  }
}

inline void set_bandwidth_counters(benchmark::State& st, double bytes_per_call, double sec_per_call, int threads) {
  const double gbps = bytes_per_call / sec_per_call * 1e-9;
  st.counters["gbps"] = gbps;
  const double bw = read_bw_gbps(threads);
  st.counters["bw_frac"] = gbps / bw;
  st.counters["bw_ref"] = bw;
}

}  // namespace attnkit_bench
