// The CPU test harness shared by test_cpu_kernel*.cpp and test_moba.cpp: a
// problem of random q / k / v with NaN-poisoned outputs, and the check of
// one call against the fp64 reference (and, for f16 / bf16, against 2x a
// naive same-dtype implementation).
#pragma once

#include <attnkit/attention.hpp>
#include <cmath>
#include <limits>
#include <string>

#include "support/test_util.hpp"

namespace attnkit_test {

struct Shape {
  int64_t B = 1, Sq = 1, Sk = 1, Hq = 1, Hkv = 1, D = 64, Dv = 64;
};

template <class T>
struct Problem {
  Shape s;
  std::vector<T> q, k, v, out;
  std::vector<float> lse;
  Problem(const Shape& sh, std::mt19937_64& rng, float amp = 1.0f) : s(sh) {
    q = random_vector<T>(static_cast<size_t>(s.B * s.Sq * s.Hq * s.D), rng, -amp, amp);
    k = random_vector<T>(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.D), rng, -amp, amp);
    v = random_vector<T>(static_cast<size_t>(s.B * s.Sk * s.Hkv * s.Dv), rng);
    poison();
  }
  void poison() {
    out.assign(static_cast<size_t>(s.B * s.Sq * s.Hq * s.Dv), from_float<T>(std::numeric_limits<float>::quiet_NaN()));
    lse.assign(static_cast<size_t>(s.B * s.Hq * s.Sq), std::numeric_limits<float>::quiet_NaN());
  }
  Tensor4<const T> Q() const { return Tensor4<const T>(q.data(), {s.B, s.Sq, s.Hq, s.D}); }
  Tensor4<const T> K() const { return Tensor4<const T>(k.data(), {s.B, s.Sk, s.Hkv, s.D}); }
  Tensor4<const T> V() const { return Tensor4<const T>(v.data(), {s.B, s.Sk, s.Hkv, s.Dv}); }
  Tensor4<T> O() { return Tensor4<T>(out.data(), {s.B, s.Sq, s.Hq, s.Dv}); }
};

// The bound a finished call (pr.out, after a NaN poison) meets against the
// fp64 reference `ref`: every element written; fp32 within `fp32_tol`
// (relative L2) and LSE within 1e-4; f16 / bf16 within 2x the error of a
// same-dtype naive implementation of `mask` (DESIGN §9) and LSE within 2e-2.
// `lse_err`: the caller's measure of the LSE error.
template <class T, class Mask>
void check_error_bound(const Problem<T>& pr, const ReferenceOutput& ref, const Mask& mask, const AttentionOptions& opts,
                       double lse_err, double fp32_tol = 1e-5) {
  REQUIRE(all_finite(pr.out));
  const double err = rel_l2(pr.out, ref.out);
  INFO("rel_l2 = " << err << ", lse err = " << lse_err);
  if constexpr (std::is_same_v<T, float>) {
    CHECK(err <= fp32_tol);
    CHECK(lse_err <= 1e-4);
  } else {
    const T dummy{};
    const AttentionParams<T> p =
        make_params<T>(pr.Q(), pr.K(), pr.V(),
                       Tensor4<T>(const_cast<T*>(&dummy), {pr.s.B, pr.s.Sq, pr.s.Hq, pr.s.Dv}, {0, 0, 0, 1}), opts);
    const std::vector<T> naive = naive_same_dtype(p, mask, pr.s.B * pr.s.Sq);
    const double naive_err = rel_l2(naive, ref.out);
    INFO("naive same-dtype rel_l2 = " << naive_err);
    CHECK(err <= 2.0 * naive_err + 1e-6);
    CHECK(lse_err <= 2e-2);
  }
}

// Runs the kernel and the reference; checks tolerance, LSE (relative to its
// magnitude), and that every output element was written.
template <class T, class Mask>
void check_against_reference(Problem<T>& pr, const Mask& mask, AttentionOptions opts, const std::string& what,
                             double fp32_tol = 1e-5) {
  INFO(what);
  pr.poison();
  opts.lse = pr.lse.data();
  attention(pr.Q(), pr.K(), pr.V(), pr.O(), mask, opts);
  const ReferenceOutput ref = reference_attention(pr.Q(), pr.K(), pr.V(), mask, opts);
  // LSE error relative to its magnitude (logits reach 1e4 in the overflow test).
  double lse_mag = 1.0;
  for (double l : ref.lse)
    if (std::isfinite(l)) lse_mag = std::max(lse_mag, std::abs(l));
  check_error_bound(pr, ref, mask, opts, lse_max_abs_err(pr.lse, ref.lse) / lse_mag, fp32_tol);
}

}  // namespace attnkit_test
