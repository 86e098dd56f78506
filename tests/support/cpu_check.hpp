// The CPU kernel test harness shared by test_cpu_kernel*.cpp: a problem of
// random q / k / v with NaN-poisoned outputs, and the check of one call
// against the fp64 reference (and, for f16 / bf16, against 2x a naive
// same-dtype implementation). Two translation units so CI compiles them on
// both cores.
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

// Runs the kernel and the reference; checks tolerance, LSE, and that every
// output element was written (poisoned with NaN before).
template <class T, class Mask>
void check_against_reference(Problem<T>& pr, const Mask& mask, AttentionOptions opts, const std::string& what,
                             double fp32_tol = 1e-5) {
  INFO(what);
  pr.poison();
  opts.lse = pr.lse.data();
  attention(pr.Q(), pr.K(), pr.V(), pr.O(), mask, opts);
  const ReferenceOutput ref = reference_attention(pr.Q(), pr.K(), pr.V(), mask, opts);
  REQUIRE(all_finite(pr.out));
  const double err = rel_l2(pr.out, ref.out);
  // LSE error relative to its magnitude (logits reach 1e4 in the overflow test).
  double lse_mag = 1.0;
  for (double l : ref.lse)
    if (std::isfinite(l)) lse_mag = std::max(lse_mag, std::abs(l));
  const double lse_err = lse_max_abs_err(pr.lse, ref.lse) / lse_mag;
  INFO("rel_l2 = " << err << ", lse max abs err = " << lse_err);
  if constexpr (std::is_same_v<T, float>) {
    CHECK(err <= fp32_tol);
    CHECK(lse_err <= 1e-4);
  } else {
    // DESIGN §9: at most 2x the error of a same-dtype naive implementation.
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

}  // namespace attnkit_test
