// One attention layer shaped like Llama-3 8B on the CPU: 32 query heads
// sharing 8 KV heads (GQA, head h reads KV head h / 4), head dim 128, RoPE
// with theta 500000 in Meta's interleaved style, fused into the kernel.
// Prefill 512 tokens, then decode 16 tokens one at a time against the
// growing KV cache; every step is checked against the fp64 reference
// (applied to q and k rotated separately with apply_rope), and timed.
//
// Note on decode speed: with fused RoPE the cache holds unrotated keys, so
// every step rotates all of them again (cos/sin table + rotation per tile).
// An engine that decodes many tokens should rather store rotated keys
// (apply_rope on the new token's k) and call without opts.rope.
#include <attnkit/attention.hpp>
#include <attnkit/reference/reference.hpp>
#include <attnkit/rope/rope.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace attnkit;

namespace {

constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kPrefill = 512, kDecode = 16, kCapacity = kPrefill + kDecode;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Max |out - ref| after rotating copies of q and the first `len` cache rows
// independently, so the check does not trust the fused path.
double check(const std::vector<float>& q, int64_t sq, const std::vector<float>& k_cache,
             const std::vector<float>& v_cache, int64_t len, const std::vector<float>& out, const RopeConfig& rope) {
  std::vector<float> qr(q.begin(), q.begin() + sq * kHq * kD), kr(k_cache.begin(), k_cache.begin() + len * kHkv * kD);
  ApplyRopeOptions qpos;
  qpos.start_position = len - sq;  // queries are the last sq tokens (bottom-right)
  apply_rope(Tensor4<float>(qr.data(), {1, sq, kHq, kD}), rope, qpos);
  apply_rope(Tensor4<float>(kr.data(), {1, len, kHkv, kD}), rope, ApplyRopeOptions{});
  const ReferenceOutput ref = reference_attention(
      Tensor4<const float>(qr.data(), {1, sq, kHq, kD}), Tensor4<const float>(kr.data(), {1, len, kHkv, kD}),
      Tensor4<const float>(v_cache.data(), {1, len, kHkv, kD}), CausalMask{});
  double err = 0.0;
  for (size_t n = 0; n < ref.out.size(); ++n) err = std::max(err, std::abs(out[n] - ref.out[n]));
  return err;
}

}  // namespace

int main() {
  std::mt19937_64 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) x = normal(rng);
  };

  // KV cache with room for every token; a call sees the first `len` rows
  // through a view, so nothing is copied when the cache grows.
  std::vector<float> k_cache(kCapacity * kHkv * kD), v_cache(kCapacity * kHkv * kD);
  fill(k_cache);
  fill(v_cache);
  std::vector<float> q(kPrefill * kHq * kD), out(kPrefill * kHq * kD);
  fill(q);

  const RopeConfig rope = RopeConfig::standard(RopeStyle::Interleaved, 500000.0);
  AttentionOptions opts;
  opts.rope = &rope;  // k_cache holds unrotated keys; the kernel rotates tiles as it loads them

  auto cache_view = [&](std::vector<float>& c, int64_t len) {
    return Tensor4<const float>(c.data(), {1, len, kHkv, kD});
  };

  auto t0 = std::chrono::steady_clock::now();
  attention(Tensor4<const float>(q.data(), {1, kPrefill, kHq, kD}), cache_view(k_cache, kPrefill),
            cache_view(v_cache, kPrefill), Tensor4<float>(out.data(), {1, kPrefill, kHq, kD}), CausalMask{}, opts);
  const double prefill_s = seconds_since(t0);
  const double pairs = kPrefill * (kPrefill + 1) / 2.0 * kHq;
  const double prefill_err = check(q, kPrefill, k_cache, v_cache, kPrefill, out, rope);
  std::printf("Llama-3 8B attention layer: Hq=%lld Hkv=%lld D=%lld, RoPE theta 500000 (interleaved), fp32\n",
              static_cast<long long>(kHq), static_cast<long long>(kHkv), static_cast<long long>(kD));
  std::printf("prefill %lld tokens: %8.2f ms  %6.1f GFLOP/s  max |out - fp64 ref| = %.2e\n",
              static_cast<long long>(kPrefill), prefill_s * 1e3, 4.0 * kD * pairs / prefill_s * 1e-9, prefill_err);

  bool ok = prefill_err < 1e-4;
  std::vector<float> q1(kHq * kD), out1(kHq * kD);
  for (int64_t step = 0; step < kDecode; ++step) {
    const int64_t len = kPrefill + step + 1;  // the new token's k/v are already in the cache (row len - 1)
    fill(q1);
    t0 = std::chrono::steady_clock::now();
    attention(Tensor4<const float>(q1.data(), {1, 1, kHq, kD}), cache_view(k_cache, len), cache_view(v_cache, len),
              Tensor4<float>(out1.data(), {1, 1, kHq, kD}), CausalMask{}, opts);
    const double s = seconds_since(t0);
    const double err = check(q1, 1, k_cache, v_cache, len, out1, rope);
    ok = ok && err < 1e-4;
    std::printf("decode step %2lld (cache %lld): %7.3f ms  %6.2f GB/s of K+V  max |out - fp64 ref| = %.2e\n",
                static_cast<long long>(step), static_cast<long long>(len), s * 1e3,
                2.0 * len * kHkv * kD * sizeof(float) / s * 1e-9, err);
  }
  std::printf("%s\n", ok ? "all steps match the fp64 reference (max error < 1e-4)" : "MISMATCH against the reference");
  std::printf("(decode re-rotates the whole unrotated cache each step; store rotated keys for long decodes)\n");
  return ok ? 0 : 1;
}
