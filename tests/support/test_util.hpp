// Shared test helpers: random problems with fresh seeds, error metrics, and the
// "same-dtype naive implementation" used for the fp16/bf16 tolerance rule.
#pragma once

#include <catch2/catch.hpp>

#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace attnkit_test {

using namespace attnkit;

// A fresh seed per run (printed by Catch on failure through INFO at call
// sites), overridable with ATTNKIT_TEST_SEED for reproduction.
inline uint64_t fresh_seed() {
  static uint64_t base = [] {
    if (const char* s = std::getenv("ATTNKIT_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 10));
    return static_cast<uint64_t>(std::random_device{}()) ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
  }();
  static uint64_t counter = 0;
  return base + 0x9E3779B97F4A7C15ull * (++counter);
}

template <class T>
std::vector<T> random_vector(size_t n, std::mt19937_64& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = from_float<T>(dist(rng));
  return v;
}

// ||a - b|| / ||b|| over the entries where `b` is finite; entries must agree on
// being exactly zero rows etc. (checked by the caller where it matters).
template <class A>
double rel_l2(const std::vector<A>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t n = 0; n < b.size(); ++n) {
    const double x = static_cast<double>(to_float(a[n])), y = b[n];
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline double rel_l2(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t n = 0; n < b.size(); ++n) {
    const double x = a[n], y = b[n];
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Max |lse - ref| over rows where ref is finite; rows where ref is -inf must be
// -inf in `lse` too (returns +inf otherwise, failing any tolerance).
inline double lse_max_abs_err(const std::vector<float>& lse, const std::vector<double>& ref) {
  double e = 0.0;
  for (size_t n = 0; n < ref.size(); ++n) {
    if (std::isinf(ref[n])) {
      if (!(std::isinf(lse[n]) && lse[n] < 0)) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (!std::isfinite(lse[n])) return std::numeric_limits<double>::infinity();
    e = std::max(e, std::abs(static_cast<double>(lse[n]) - ref[n]));
  }
  return e;
}

template <class T>
bool all_finite(const std::vector<T>& v) {
  for (const auto& x : v)
    if (!std::isfinite(to_float(x))) return false;
  return true;
}

// The same-dtype naive implementation (what PyTorch does in bf16/fp16 without
// a fused kernel): S = QK^T accumulated in fp32 and rounded to T, softmax in
// fp32 with P rounded to T, PV accumulated in fp32, output rounded to T.
// Its error against the fp64 reference sets the tolerance for T (DESIGN §9).
template <class T, class Mask>
std::vector<T> naive_same_dtype(const AttentionParams<T>& p, const Mask& mask, int64_t out_rows) {
  const ProblemShape& s = p.shape;
  const int64_t Hq = s.q_heads, D = s.head_dim, Dv = s.v_head_dim;
  std::vector<T> out(static_cast<size_t>(out_rows * Hq * Dv), from_float<T>(0.0f));
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.q_len(b), lk = s.kv_len(b);
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = s.kv_head_of(h);
      const SeqCtx ctx = s.ctx(b, h);
      std::vector<float> srow(static_cast<size_t>(lk));
      for (int64_t i = 0; i < lq; ++i) {
        const T* qr = p.q_row(b, i, h);
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < lk; ++j) {
          float acc = 0.0f;
          const T* kr = p.k_row(b, j, hk);
          for (int64_t d = 0; d < D; ++d) acc += to_float(qr[d]) * to_float(kr[d]);
          float x = to_float(from_float<T>(acc * p.scale));
          if (p.softcap > 0) x = p.softcap * std::tanh(x / p.softcap);
          if (p.alibi_slopes) x += p.alibi_slopes[h] * static_cast<float>(j - ctx.pos(i));
          if (!mask(ctx, i, j)) x = -std::numeric_limits<float>::infinity();
          srow[j] = x;
          mx = std::max(mx, x);
        }
        const int64_t orow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
        T* o = &out[static_cast<size_t>((orow * Hq + h) * Dv)];
        if (mx == -std::numeric_limits<float>::infinity()) continue;
        float sum = 0.0f;
        for (int64_t j = 0; j < lk; ++j) {
          srow[j] = std::isinf(srow[j]) ? 0.0f : std::exp(srow[j] - mx);
          sum += srow[j];
        }
        if (p.sink_logits) sum += std::exp(p.sink_logits[h] - mx);
        std::vector<float> acc(static_cast<size_t>(Dv), 0.0f);
        for (int64_t j = 0; j < lk; ++j) {
          const float pj = to_float(from_float<T>(srow[j] / sum));
          const T* vr = p.v_row(b, j, hk);
          for (int64_t d = 0; d < Dv; ++d) acc[d] += pj * to_float(vr[d]);
        }
        for (int64_t d = 0; d < Dv; ++d) o[d] = from_float<T>(acc[d]);
      }
    }
  }
  return out;
}

}  // namespace attnkit_test
