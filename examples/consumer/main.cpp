// Uses only what an installed attnkit provides (headers + find_package): the
// front door on a small GQA problem, checked against a plain loop written here.
#include <attnkit/attention.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  constexpr int64_t B = 2, S = 37, Hq = 8, Hkv = 2, D = 64;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(B * S * Hq * D), k(B * S * Hkv * D), v(B * S * Hkv * D), out(B * S * Hq * D);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = u(rng);

  attnkit::attention(attnkit::Tensor4<const float>(q.data(), {B, S, Hq, D}),
                     attnkit::Tensor4<const float>(k.data(), {B, S, Hkv, D}),
                     attnkit::Tensor4<const float>(v.data(), {B, S, Hkv, D}),
                     attnkit::Tensor4<float>(out.data(), {B, S, Hq, D}), attnkit::CausalMask{});

  // Causal softmax(q k^T / sqrt(D)) v, query head h reading kv head h / (Hq / Hkv).
  double max_err = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t hk = h / (Hq / Hkv);
        std::vector<double> w(i + 1);
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0.0;
          for (int64_t d = 0; d < D; ++d)
            s += double(q[((b * S + i) * Hq + h) * D + d]) * k[((b * S + j) * Hkv + hk) * D + d];
          w[j] = s / std::sqrt(double(D));
          mx = std::max(mx, w[j]);
        }
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < D; ++d) {
          double o = 0.0;
          for (int64_t j = 0; j <= i; ++j) o += w[j] / sum * v[((b * S + j) * Hkv + hk) * D + d];
          max_err = std::max(max_err, std::abs(o - out[((b * S + i) * Hq + h) * D + d]));
        }
      }
  const bool ok = max_err < 1e-5;
  std::printf("attnkit %d.%d.%d consumer: causal GQA attention, max |error| = %.2e: %s\n", ATTNKIT_VERSION_MAJOR,
              ATTNKIT_VERSION_MINOR, ATTNKIT_VERSION_PATCH, max_err, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
