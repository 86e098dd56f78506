// RoPE benchmarks (issue 4): fused RoPE attention (AttentionOptions::rope: the
// kernel rotates q and k as it loads them) against rotating first with
// apply_rope and then calling attention without RoPE.
//   rope/prefill/<dtype>/<path>   Hq=32 Hkv=8 D=128 N=2048 causal, 2 threads
//   rope/decode/<dtype>/<path>    Sq=1 over Sk=8192 keys, 2 threads
// paths: fused               attention(..., opts.rope = &cfg)
//        separate            apply_rope(q) + apply_rope(k) + attention
//        separate_cached     decode only: apply_rope(q) + attention over keys rotated once
//                            beforehand (what a KV cache of rotated keys does)
//        apply_only          apply_rope(q) + apply_rope(k), no attention
//        no_rope             attention alone (the floor)
//        rerope_fused        prefill only: fused ReRoPE(w = 512), both branches near the window edge
// Counter gflops: DESIGN §8, 2 * (D + Dv) * allowed pairs, the same for every
// attention path of a shape; decode adds gbps / bw_frac of K+V. apply_only
// reports gbps of its own traffic (q and k read and written) instead. The
// config is Llama-3.1's scaling in the half (Hugging Face) style.
#if __has_include("attnkit/cpu/forward.hpp")

// GCC 12 false positive (bug 105593) inside the AVX-512 intrinsic headers once
// inlined; silenced for these system headers only, as bench_attention.cpp does.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop

#include <string>

#include "attnkit/attention.hpp"
#include "attnkit/rope/rope.hpp"
#include "bench_common.hpp"

namespace attnkit_bench {
namespace {

constexpr int kThreads = 2;

enum class Path { fused, separate, separate_cached, apply_only, no_rope, rerope_fused };
const char* path_name(Path p) {
  switch (p) {
    case Path::fused:
      return "fused";
    case Path::separate:
      return "separate";
    case Path::separate_cached:
      return "separate_cached";
    case Path::apply_only:
      return "apply_only";
    case Path::no_rope:
      return "no_rope";
    case Path::rerope_fused:
      return "rerope_fused";
  }
  return "?";
}

const attnkit::RopeConfig& llama31() {
  static const attnkit::RopeConfig c = attnkit::RopeConfig::llama3_1(attnkit::RopeStyle::Half);
  return c;
}
const attnkit::RopeConfig& rerope512() {
  static const attnkit::RopeConfig c = attnkit::RopeConfig::rerope(attnkit::RopeStyle::Half, 512, 500000.0);
  return c;
}

template <class T>
attnkit::Tensor4<T> mutable_view(std::vector<T>& x, int64_t B, int64_t S, int64_t H, int64_t D) {
  return attnkit::Tensor4<T>(x.data(), {B, S, H, D});
}

// One call of the chosen path. apply_rope rotates in place: repeating it on the
// same buffers only changes the angles, not the work or the magnitudes.
template <class T>
void call(Problem<T>& p, Path path) {
  const Shape& s = p.s;
  attnkit::AttentionOptions o;
  o.num_threads = kThreads;
  attnkit::ApplyRopeOptions ro;
  ro.num_threads = kThreads;
  // Queries are the last Sq of Sk positions (bottom-right), keys at 0..Sk-1.
  attnkit::ApplyRopeOptions rq = ro;
  rq.start_position = s.Sk - s.Sq;
  switch (path) {
    case Path::fused:
      o.rope = &llama31();
      attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), attnkit::CausalMask{}, o);
      break;
    case Path::rerope_fused:
      o.rope = &rerope512();
      attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), attnkit::CausalMask{}, o);
      break;
    case Path::separate:
    case Path::apply_only:
      attnkit::apply_rope(mutable_view(p.q, s.B, s.Sq, s.Hq, s.D), llama31(), rq);
      attnkit::apply_rope(mutable_view(p.k, s.B, s.Sk, s.Hkv, s.D), llama31(), ro);
      if (path == Path::separate) attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), attnkit::CausalMask{}, o);
      break;
    case Path::separate_cached:
      attnkit::apply_rope(mutable_view(p.q, s.B, s.Sq, s.Hq, s.D), llama31(), rq);
      attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), attnkit::CausalMask{}, o);
      break;
    case Path::no_rope:
      attnkit::attention(p.qv(), p.kv(), p.vv(), p.ov(), attnkit::CausalMask{}, o);
      break;
  }
}

template <class T>
void BM_rope(benchmark::State& st, Shape s, Path path) {
  Problem<T> p(s);
  try {
    call(p, path);  // warm-up; also tells whether this build has fused RoPE
  } catch (const attnkit::Error& e) {
    st.SkipWithError(e.what());
    for (auto _ : st) {
    }
    return;
  }
  const int64_t pairs =
      cached_pairs("causal/" + shape_key(s), [&] { return count_allowed_pairs(attnkit::CausalMask{}, s); });
  const auto t0 = Clock::now();
  for (auto _ : st) {
    call(p, path);
    benchmark::ClobberMemory();
  }
  const double sec = seconds_since(t0) / static_cast<double>(st.iterations());
  if (path == Path::apply_only) {
    // No attention: report the memory traffic (q and k read and written once).
    const double qk_bytes = static_cast<double>(s.B) * (s.Sq * s.Hq + s.Sk * s.Hkv) * s.D * sizeof(T);
    set_bandwidth_counters(st, 2.0 * qk_bytes, sec, kThreads);
    return;
  }
  set_compute_counters<T>(st, attention_flops(s, pairs), sec, kThreads);
  if (s.Sq == 1) set_bandwidth_counters(st, p.kv_bytes(), sec, kThreads);
}

template <class T>
void register_dtype(const char* dtype) {
  const Shape prefill{1, 2048, 2048, 32, 8, 128, 128};
  const Shape decode{1, 1, 8192, 32, 8, 128, 128};
  for (Path path : {Path::fused, Path::separate, Path::apply_only, Path::no_rope, Path::rerope_fused}) {
    const std::string name = std::string("rope/prefill/") + dtype + "/" + path_name(path);
    benchmark::RegisterBenchmark(name.c_str(), BM_rope<T>, prefill, path)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (Path path : {Path::fused, Path::separate, Path::separate_cached, Path::apply_only, Path::no_rope}) {
    const std::string name = std::string("rope/decode/") + dtype + "/" + path_name(path);
    benchmark::RegisterBenchmark(name.c_str(), BM_rope<T>, decode, path)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
}

[[maybe_unused]] const bool registered = [] {
  register_dtype<float>("f32");
  register_dtype<attnkit::bfloat16>("bf16");
  return true;
}();

}  // namespace
}  // namespace attnkit_bench

#endif  // __has_include("attnkit/cpu/forward.hpp")
