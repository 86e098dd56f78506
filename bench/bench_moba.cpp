// MoBA vs the library's own full causal attention on the CPU (issue 6):
// N = 8k, 32k, 128k; Bs = 512; top_k 3 and 8; B = 1, Hq = 4, Hkv = 1 (GQA 4),
// D = 128, fp32, 2 threads.
//
// Counters (per call):
//   gflops            2 (D + Dv) x allowed pairs of the selected mask / time (DESIGN §8)
//   gate_ms           moba_select() alone: block means + gate scores + top-k
//   gate_share        gate_ms / MoBA time (the MoBA call includes its own gate)
//   sparsity          allowed pairs / causal pairs
//   ideal_speedup     N / (2 top_k Bs)
//   speedup_vs_full   full causal time / MoBA time, full measured in this run
//   speedup_vs_full_est_n2   at 128k: full causal is NOT measured by default (it
//                     takes minutes on 2 shared cores); its time is estimated
//                     from the measured 32k time x (causal pairs at 128k /
//                     causal pairs at 32k), i.e. the N^2 law. Set
//                     ATTNKIT_MOBA_BENCH_FULL_128K=1 to measure it (1 iteration)
//                     and get speedup_vs_full instead.
//   frac_of_ideal     speedup / ideal_speedup (target: >= 1 / 1.5)
#include <benchmark/benchmark.h>

// GCC 12 false positive inside its AVX-512 intrinsic headers (as in the other bench files).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <attnkit/attention.hpp>
#include <attnkit/moba/moba.hpp>
#pragma GCC diagnostic pop
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "bench_common.hpp"

namespace {

using attnkit_bench::Clock;
using attnkit_bench::seconds_since;

constexpr int64_t kHq = 4, kHkv = 1, kD = 128, kBs = 512;
constexpr int kThreads = 2;

// One problem size alive at a time (128k needs ~650 MB).
attnkit_bench::Problem<float>& problem(int64_t N) {
  static int64_t current = -1;
  static std::unique_ptr<attnkit_bench::Problem<float>> p;
  if (current != N) {
    p.reset();
    attnkit_bench::Shape s;
    s.B = 1;
    s.Sq = s.Sk = N;
    s.Hq = kHq;
    s.Hkv = kHkv;
    s.D = s.Dv = kD;
    p = std::make_unique<attnkit_bench::Problem<float>>(s, 4242);
    current = N;
  }
  return *p;
}

double causal_pairs(int64_t N) { return static_cast<double>(kHq) * static_cast<double>(N) * (N + 1) / 2.0; }

// Measured full causal seconds per call, by N.
std::map<int64_t, double>& full_seconds() {
  static std::map<int64_t, double> m;
  return m;
}

bool measure_full_128k() {
  const char* e = std::getenv("ATTNKIT_MOBA_BENCH_FULL_128K");
  return e && std::string(e) == "1";
}

void BM_full_causal(benchmark::State& st) {
  const int64_t N = st.range(0);
  auto& pr = problem(N);
  attnkit::AttentionOptions o;
  o.num_threads = kThreads;
  double total = 0.0;
  int64_t calls = 0;
  for (auto _ : st) {
    const auto t0 = Clock::now();
    attnkit::attention(pr.qv(), pr.kv(), pr.vv(), pr.ov(), attnkit::CausalMask{}, o);
    const double s = seconds_since(t0);
    st.SetIterationTime(s);
    total += s;
    ++calls;
  }
  const double sec = total / static_cast<double>(calls);
  full_seconds()[N] = sec;
  st.counters["gflops"] = 2.0 * (kD + kD) * causal_pairs(N) / sec * 1e-9;
}

void BM_moba(benchmark::State& st) {
  const int64_t N = st.range(0), top_k = st.range(1);
  auto& pr = problem(N);
  attnkit::AttentionOptions o;
  o.num_threads = kThreads;
  const attnkit::MobaConfig cfg{kBs, top_k};
  double total = 0.0;
  int64_t calls = 0;
  for (auto _ : st) {
    const auto t0 = Clock::now();
    attnkit::attention(pr.qv(), pr.kv(), pr.vv(), pr.ov(), cfg, o);
    const double s = seconds_since(t0);
    st.SetIterationTime(s);
    total += s;
    ++calls;
  }
  const double sec = total / static_cast<double>(calls);
  // The gate alone (same work the call above did first), timed separately.
  const auto g0 = Clock::now();
  const attnkit::MobaSelection sel = attnkit::moba_select(pr.qv(), pr.kv(), cfg, o);
  const double gate = seconds_since(g0);
  // Allowed pairs of the selected mask: whole past blocks + the causal part of the own block.
  double pairs = 0.0;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t h = 0; h < kHq; ++h) {
      const std::vector<int32_t> c = sel.chosen(0, h, i);
      for (size_t a = 0; a + 1 < c.size(); ++a) pairs += static_cast<double>(std::min(kBs, N - c[a] * kBs));
      if (!c.empty()) pairs += static_cast<double>(i - int64_t(c.back()) * kBs + 1);
    }
  const double ideal = static_cast<double>(N) / (2.0 * static_cast<double>(top_k * kBs));
  st.counters["gflops"] = 2.0 * (kD + kD) * pairs / sec * 1e-9;
  st.counters["gate_ms"] = gate * 1e3;
  st.counters["gate_share"] = gate / sec;
  st.counters["sparsity"] = pairs / causal_pairs(N);
  st.counters["ideal_speedup"] = ideal;
  auto it = full_seconds().find(N);
  if (it != full_seconds().end()) {
    st.counters["speedup_vs_full"] = it->second / sec;
    st.counters["frac_of_ideal"] = it->second / sec / ideal;
  } else if (full_seconds().count(32768)) {
    const double est = full_seconds()[32768] * causal_pairs(N) / causal_pairs(32768);
    st.counters["full_est_s"] = est;
    st.counters["speedup_vs_full_est_n2"] = est / sec;
    st.counters["frac_of_ideal"] = est / sec / ideal;
    st.SetLabel("full causal estimated from the measured 32k time by the N^2 law");
  }
}

int register_all() {
  // Full causal first, so every MoBA run finds the measurement of its N.
  for (int64_t N : {8192, 32768, 131072}) {
    if (N == 131072 && !measure_full_128k()) continue;
    auto* b = benchmark::RegisterBenchmark(("moba/full_causal/N:" + std::to_string(N)).c_str(), BM_full_causal)
                  ->Args({N})
                  ->UseManualTime()
                  ->Unit(benchmark::kMillisecond);
    if (N >= 32768) b->Iterations(1);
    for (int64_t k : {3, 8}) {
      auto* m = benchmark::RegisterBenchmark(
                    ("moba/moba_Bs512/N:" + std::to_string(N) + "/top_k:" + std::to_string(k)).c_str(), BM_moba)
                    ->Args({N, k})
                    ->UseManualTime()
                    ->Unit(benchmark::kMillisecond);
      if (N >= 131072) m->Iterations(1);
    }
  }
  if (!measure_full_128k())
    for (int64_t k : {3, 8})
      benchmark::RegisterBenchmark(("moba/moba_Bs512/N:131072/top_k:" + std::to_string(k)).c_str(), BM_moba)
          ->Args({131072, k})
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
  return 0;
}
const int registered = register_all();

}  // namespace
