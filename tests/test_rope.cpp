// RoPE against independent formula code written here in double precision:
//   - Meta's Llama reference: adjacent pairs as complex numbers times
//     freqs_cis = e^{i t theta_i} (interleaved style);
//   - Hugging Face: x * cos + rotate_half(x) * sin with cos/sin repeated over
//     both halves (half style);
//   - the published inverse-frequency formulas (NTK alpha, dynamic NTK, YaRN's
//     ramp as in its reference code, Llama-3.1's apply_scaling) evaluated here;
//   - ReRoPE / Leaky ReRoPE: the score under the clipped relative position.
// None of these call attnkit's frequency or rotation code.
#include <algorithm>
#include <complex>
#include <cstring>
#include <random>
#include <vector>

#include <attnkit/rope/rope.hpp>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;
using attnkit_test::fresh_seed;
using Catch::Matchers::Contains;

constexpr double kPi = 3.141592653589793238462643383279502884;

// ---- independent formulas ---------------------------------------------------

std::vector<double> ref_inv_freq(double base, int R) {
  std::vector<double> f(static_cast<size_t>(R / 2));
  for (int i = 0; i < R / 2; ++i) f[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / R);
  return f;
}

// Meta Llama reference: view (x[2i], x[2i+1]) as a complex number, multiply by
// polar(1, t * f_i). Dims >= R pass through. `scale` multiplies the rotated dims.
std::vector<double> ref_rotate_interleaved(const std::vector<double>& x, int R, const std::vector<double>& f, double t,
                                           double scale = 1.0) {
  std::vector<double> y = x;
  for (int i = 0; i < R / 2; ++i) {
    const std::complex<double> z(x[2 * i], x[2 * i + 1]);
    const std::complex<double> r = z * std::polar(scale, t * f[i]);
    y[2 * i] = r.real();
    y[2 * i + 1] = r.imag();
  }
  return y;
}

// Hugging Face: emb = cat(freqs, freqs); x * cos(emb) + rotate_half(x) * sin(emb),
// rotate_half(x) = cat(-x[R/2:], x[:R/2]), on the first R dims.
std::vector<double> ref_rotate_half(const std::vector<double>& x, int R, const std::vector<double>& f, double t,
                                    double scale = 1.0) {
  std::vector<double> y = x;
  const int h = R / 2;
  for (int d = 0; d < R; ++d) {
    const double ang = t * f[d % h];
    const double rot_half = d < h ? -x[d + h] : x[d - h];
    y[d] = x[d] * std::cos(ang) * scale + rot_half * std::sin(ang) * scale;
  }
  return y;
}

std::vector<double> ref_rotate(RopeStyle s, const std::vector<double>& x, int R, const std::vector<double>& f, double t,
                               double scale = 1.0) {
  return s == RopeStyle::Interleaved ? ref_rotate_interleaved(x, R, f, t, scale) : ref_rotate_half(x, R, f, t, scale);
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t n = 0; n < b.size(); ++n) e = std::max(e, std::abs(static_cast<double>(a[n]) - b[n]));
  return e;
}

std::vector<float> random_floats(size_t n, std::mt19937_64& rng) {
  return attnkit_test::random_vector<float>(n, rng, -1.0f, 1.0f);
}

rope::RopeParams params_of(const RopeConfig& c, int64_t D, int64_t seq_len = 0) { return rope::resolve(c, D, seq_len); }

// ---- frequency formulas (published) -------------------------------------------

// YaRN's reference code (jquesnelle/yarn, adopted by Hugging Face): the pair
// index at which the wavelength fits `rot` times into T, a linear ramp in the
// pair index between the truncated ends.
std::vector<double> ref_yarn(double base, int R, double s, double T, double beta_fast, double beta_slow, bool trunc) {
  auto corr = [&](double rot) { return (R * std::log(T / (rot * 2 * kPi))) / (2 * std::log(base)); };
  double low = corr(beta_fast), high = corr(beta_slow);
  if (trunc) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, R - 1.0);
  if (low == high) high += 0.001;
  std::vector<double> f = ref_inv_freq(base, R), out(f.size());
  for (size_t i = 0; i < f.size(); ++i) {
    const double ramp = std::min(1.0, std::max(0.0, (static_cast<double>(i) - low) / (high - low)));
    const double extra_w = 1.0 - ramp;
    out[i] = (f[i] / s) * (1 - extra_w) + f[i] * extra_w;
  }
  return out;
}

// Meta's llama-models apply_scaling (Llama 3.1).
std::vector<double> ref_llama3(double base, int R, double factor, double low_ff, double high_ff, double T) {
  std::vector<double> out;
  for (double f : ref_inv_freq(base, R)) {
    const double wavelen = 2 * kPi / f;
    if (wavelen < T / high_ff) {
      out.push_back(f);
    } else if (wavelen > T / low_ff) {
      out.push_back(f / factor);
    } else {
      const double smooth = (T / wavelen - low_ff) / (high_ff - low_ff);
      out.push_back((1 - smooth) * f / factor + smooth * f);
    }
  }
  return out;
}

void check_freqs(const rope::RopeParams& p, const std::vector<double>& want) {
  REQUIRE(p.pairs == static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("pair " << i);
    CHECK(p.inv_freq[i] == Approx(want[i]).epsilon(1e-12));
  }
}

}  // namespace

// ============================================================================
TEST_CASE("rope: default and linear inverse frequencies", "[rope]") {
  for (int R : {2, 8, 64, 128, 256}) {
    INFO("R = " << R);
    check_freqs(params_of(RopeConfig::standard(RopeStyle::Half, 10000.0), R), ref_inv_freq(10000.0, R));
    check_freqs(params_of(RopeConfig::standard(RopeStyle::Half, 500000.0), R), ref_inv_freq(500000.0, R));
    std::vector<double> lin = ref_inv_freq(10000.0, R);
    for (double& f : lin) f /= 4.0;  // g(t) = t * T / T'
    check_freqs(params_of(RopeConfig::linear(RopeStyle::Half, 4.0), R), lin);
  }
  // Partial rotary: frequencies come from R, not D.
  check_freqs(params_of(RopeConfig::standard(RopeStyle::Half, 10000.0, 32), 128), ref_inv_freq(10000.0, 32));
  CHECK(params_of(RopeConfig::standard(RopeStyle::Half), 128).attention_scaling == 1.0f);
}

TEST_CASE("rope: NTK-aware alpha and dynamic NTK follow the published formulas", "[rope]") {
  for (int R : {16, 64, 128}) {
    for (double factor : {2.0, 8.0}) {
      INFO("R = " << R << " factor = " << factor);
      const double alpha = std::pow(factor, static_cast<double>(R) / (R - 2));
      check_freqs(params_of(RopeConfig::ntk(RopeStyle::Half, factor), R), ref_inv_freq(alpha * 10000.0, R));
      // NTK keeps the highest frequency and stretches the lowest by exactly factor.
      const auto p = params_of(RopeConfig::ntk(RopeStyle::Half, factor), R);
      CHECK(p.inv_freq[0] == 1.0);

      // Dynamic: base unchanged up to T; base * (factor L/T - (factor-1))^(R/(R-2)) beyond.
      const int64_t T = 4096;
      const auto cfg = RopeConfig::dynamic_ntk(RopeStyle::Half, factor, T);
      check_freqs(params_of(cfg, R, 100), ref_inv_freq(10000.0, R));
      check_freqs(params_of(cfg, R, T), ref_inv_freq(10000.0, R));
      for (int64_t L : {T + 1, 3 * T, 8 * T + 5}) {
        const double a = std::pow(factor * static_cast<double>(L) / T - (factor - 1), static_cast<double>(R) / (R - 2));
        check_freqs(params_of(cfg, R, L), ref_inv_freq(a * 10000.0, R));
      }
    }
  }
}

TEST_CASE("rope: YaRN frequencies, ramp ends and temperature", "[rope]") {
  struct Case {
    double base, factor;
    int R;
    double T;
  };
  for (const Case c : {Case{10000, 8, 128, 4096}, Case{10000, 4, 64, 2048}, Case{1000000, 4, 128, 32768},
                       Case{500000, 16, 96, 8192}}) {
    for (bool trunc : {true, false}) {
      INFO("base " << c.base << " factor " << c.factor << " R " << c.R << " T " << c.T << " trunc " << trunc);
      RopeConfig cfg = RopeConfig::yarn(RopeStyle::Half, c.factor, static_cast<int64_t>(c.T), c.base);
      cfg.yarn_truncate = trunc;
      const auto p = params_of(cfg, c.R);
      check_freqs(p, ref_yarn(c.base, c.R, c.factor, c.T, 32, 1, trunc));
      CHECK(p.attention_scaling == Approx(0.1 * std::log(c.factor) + 1.0).epsilon(1e-7));
      // The paper's intent, independent of the ramp shape: pairs turning more
      // than beta_fast times over T keep their frequency, fewer than beta_slow
      // are interpolated by 1/factor.
      const auto f0 = ref_inv_freq(c.base, c.R);
      int kept = 0, interpolated = 0;
      for (int i = 0; i < c.R / 2; ++i) {
        const double rotations = c.T * f0[i] / (2 * kPi);
        if (rotations > 32.0 * 1.0001) {
          CHECK(p.inv_freq[i] == Approx(f0[i]).epsilon(1e-12));
          ++kept;
        }
        if (rotations < 1.0 / 1.0001) {
          CHECK(p.inv_freq[i] == Approx(f0[i] / c.factor).epsilon(1e-12));
          ++interpolated;
        }
      }
      CHECK(kept > 0);
      CHECK(interpolated > 0);
    }
  }
  // Explicit temperature and betas.
  const auto p = params_of(RopeConfig::yarn(RopeStyle::Interleaved, 4, 4096, 10000, 16, 2, 1.25), 128);
  check_freqs(p, ref_yarn(10000, 128, 4, 4096, 16, 2, true));
  CHECK(p.attention_scaling == 1.25f);
}

TEST_CASE("rope: Llama-3.1 frequency scaling matches apply_scaling", "[rope]") {
  check_freqs(params_of(RopeConfig::llama3_1(RopeStyle::Interleaved), 128), ref_llama3(500000, 128, 8, 1, 4, 8192));
  check_freqs(params_of(RopeConfig::llama3_1(RopeStyle::Half, 32, 1, 4, 8192), 64),
              ref_llama3(500000, 64, 32, 1, 4, 8192));
  check_freqs(params_of(RopeConfig::llama3_1(RopeStyle::Half, 4, 2, 8, 2048, 10000), 128),
              ref_llama3(10000, 128, 4, 2, 8, 2048));
  // All three bands occur for the released config (so the test covers each branch).
  const auto f0 = ref_inv_freq(500000, 128);
  const auto f = ref_llama3(500000, 128, 8, 1, 4, 8192);
  int keep = 0, interp = 0, smooth = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == f0[i])
      ++keep;
    else if (f[i] == f0[i] / 8)
      ++interp;
    else
      ++smooth;
  }
  CHECK(keep > 0);
  CHECK(interp > 0);
  CHECK(smooth > 0);
}

TEST_CASE("rope: rotate_row matches Meta's complex multiplication and HF's rotate_half", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  struct Shape {
    int D, R;
  };
  for (const Shape sh : {Shape{64, 64}, Shape{128, 128}, Shape{80, 80}, Shape{128, 64}, Shape{96, 32}, Shape{6, 2},
                         Shape{256, 256}, Shape{10, 6}}) {
    for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
      for (double base : {10000.0, 500000.0}) {
        INFO("D " << sh.D << " R " << sh.R << " style " << to_string(style) << " base " << base);
        const auto p = params_of(RopeConfig::standard(style, base, sh.R == sh.D ? 0 : sh.R), sh.D);
        const auto f = ref_inv_freq(base, sh.R);
        std::uniform_int_distribution<int64_t> pos(0, 40000);
        for (int trial = 0; trial < 8; ++trial) {
          const int64_t t = trial == 0 ? 1 : pos(rng);
          std::vector<float> x = random_floats(static_cast<size_t>(sh.D), rng);
          const std::vector<double> want = ref_rotate(style, to_double(x), sh.R, f, static_cast<double>(t));
          std::vector<float> y = x;
          rope::rotate_row(p, y.data(), static_cast<double>(t));
          INFO("t " << t);
          CHECK(max_abs_diff(y, want) < 1e-6);
          // Dims >= R untouched, bit for bit.
          for (int d = sh.R; d < sh.D; ++d) CHECK(y[d] == x[d]);
          // Table path == on-the-fly path (same cos/sin, same rotation).
          std::vector<float> c(p.pairs), s(p.pairs), z = x;
          rope::fill_cos_sin(p, static_cast<double>(t), c.data(), s.data());
          rope::rotate_with(p, z.data(), c.data(), s.data());
          CHECK(max_abs_diff(z, to_double(y)) < 1e-6);
        }
      }
    }
  }
}

TEST_CASE("rope: position 0 is the identity (times YaRN's temperature)", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const RopeConfig cfgs[] = {
      RopeConfig::standard(RopeStyle::Interleaved), RopeConfig::standard(RopeStyle::Half, 1e6),
      RopeConfig::linear(RopeStyle::Half, 4),       RopeConfig::ntk(RopeStyle::Interleaved, 8),
      RopeConfig::llama3_1(RopeStyle::Half),        RopeConfig::standard(RopeStyle::Half, 1e4, 32)};
  for (const auto& cfg : cfgs) {
    const auto p = params_of(cfg, 128);
    std::vector<float> x = random_floats(128, rng), y = x;
    rope::rotate_row(p, y.data(), 0.0);
    CHECK(y == x);
    rope::RopeTable table(p, 0, 3);
    std::vector<float> z = x;
    rope::rotate_with(p, z.data(), table.cos_row(0), table.sin_row(0));
    CHECK(z == x);
  }
  const auto p = params_of(RopeConfig::yarn(RopeStyle::Half, 8, 4096), 128);
  std::vector<float> x = random_floats(128, rng), y = x;
  rope::rotate_row(p, y.data(), 0.0);
  for (int d = 0; d < 128; ++d) CHECK(y[d] == x[d] * p.attention_scaling);
}

TEST_CASE("rope: YaRN rotation = HF rotation with cos and sin times the temperature", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
    // Partial rotary: the temperature scales the rotated dims only, as in HF.
    const auto p = params_of(RopeConfig::yarn(style, 8, 4096).with_rotary_dim(64), 128);
    const auto f = ref_yarn(10000, 64, 8, 4096, 32, 1, true);
    const double mscale = 0.1 * std::log(8.0) + 1.0;
    for (int64_t t : {int64_t(3), int64_t(5000), int64_t(32767)}) {
      std::vector<float> x = random_floats(128, rng), y = x;
      rope::rotate_row(p, y.data(), static_cast<double>(t));
      CHECK(max_abs_diff(y, ref_rotate(style, to_double(x), 64, f, static_cast<double>(t), mscale)) < 2e-6);
      for (int d = 64; d < 128; ++d) CHECK(y[d] == x[d]);
    }
  }
}

TEST_CASE("rope: interleaved and half are related by the dim permutation", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int R : {8, 64, 128}) {
    const int D = R + 16;  // with pass-through dims
    const auto pi = params_of(RopeConfig::standard(RopeStyle::Interleaved, 10000, R), D);
    const auto ph = params_of(RopeConfig::standard(RopeStyle::Half, 10000, R), D);
    // Interleaved dim 2i <-> half dim i, interleaved 2i+1 <-> half i + R/2.
    auto to_half = [&](const std::vector<float>& v) {
      std::vector<float> w = v;
      for (int i = 0; i < R / 2; ++i) w[i] = v[2 * i], w[i + R / 2] = v[2 * i + 1];
      return w;
    };
    for (int64_t t : {int64_t(1), int64_t(77), int64_t(123456)}) {
      std::vector<float> x = random_floats(static_cast<size_t>(D), rng);
      std::vector<float> a = x, b = to_half(x);
      rope::rotate_row(pi, a.data(), static_cast<double>(t));
      rope::rotate_row(ph, b.data(), static_cast<double>(t));
      CHECK(max_abs_diff(to_half(a), to_double(b)) < 1e-6);
    }
  }
}

TEST_CASE("rope: positions 2^20 and 2^24 keep fp32 accuracy", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
    const auto p = params_of(RopeConfig::standard(style, 10000), 128);
    const auto f = ref_inv_freq(10000, 128);
    for (int64_t t :
         {int64_t(1) << 20, (int64_t(1) << 20) + 12345, int64_t(1) << 24, (int64_t(1) << 24) - 1, int64_t(1) << 28}) {
      INFO("t " << t << " style " << to_string(style));
      std::vector<float> x = random_floats(128, rng), y = x;
      const auto want = ref_rotate(style, to_double(x), 128, f, static_cast<double>(t));
      rope::rotate_row(p, y.data(), static_cast<double>(t));
      CHECK(max_abs_diff(y, want) < 1e-6);
      // The table path too (a range far from 0).
      rope::RopeTable table(p, t - 2, 4);
      std::vector<float> z = x;
      rope::rotate_with(p, z.data(), table.cos_row(t), table.sin_row(t));
      CHECK(max_abs_diff(z, want) < 1e-6);
      // What the accuracy guards against: the angle formed in fp32 (as
      // t.float() * inv_freq.float() does) is off by far more. This makes sure
      // the checks above can fail at these positions.
      std::vector<double> naive = to_double(x);
      for (int i = 0; i < 64; ++i) {
        const float ang = static_cast<float>(t) * static_cast<float>(f[i]);
        const int a = style == RopeStyle::Interleaved ? 2 * i : i,
                  b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + 64;
        naive[a] = x[a] * std::cos(ang) - x[b] * std::sin(ang);
        naive[b] = x[a] * std::sin(ang) + x[b] * std::cos(ang);
      }
      double naive_err = 0;
      for (int d = 0; d < 128; ++d) naive_err = std::max(naive_err, std::abs(naive[d] - want[d]));
      CHECK(naive_err > 1e-4);
    }
  }
}

TEST_CASE("rope: config and resolve validation messages", "[rope]") {
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const attnkit::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::standard(RopeStyle::Half, 10000, 130), 128); }),
             Contains("attnkit: rope.rotary_dim (130) must be <= head_dim (128)"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::standard(RopeStyle::Half, 10000, 7), 128); }),
             Contains("attnkit: rope.rotary_dim (7) must be even"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::standard(RopeStyle::Half), 63); }),
             Contains("attnkit: head_dim (63) must be even when rope.rotary_dim is 0"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::standard(RopeStyle::Half, 1.0), 64); }),
             Contains("attnkit: rope.base (1) must be finite and > 1"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::linear(RopeStyle::Half, 0.0), 64); }),
             Contains("attnkit: rope.factor (0) must be finite and > 0"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::yarn(RopeStyle::Half, 4, 0), 64); }),
             Contains("attnkit: rope.original_max_position (0) must be >= 1"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::yarn(RopeStyle::Half, 4, 4096, 1e4, 1, 32), 64); }),
             Contains("attnkit: rope.beta_fast (1) must be greater than rope.beta_slow (32)"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::llama3_1(RopeStyle::Half, 8, 4, 1), 64); }),
             Contains("attnkit: rope.high_freq_factor (1) must be finite and greater than rope.low_freq_factor (4)"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::ntk(RopeStyle::Half, 2, 1e4, 2), 64); }),
             Contains("attnkit: rope.rotary_dim (2) must be > 2 for scaling 'ntk'"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::leaky_rerope(RopeStyle::Half, 512, 0), 64); }),
             Contains("attnkit: rope.leaky_k (0) must be finite and > 0"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::rerope(RopeStyle::Half, -1), 64); }),
             Contains("attnkit: rope.window (-1) must be finite and >= 0"));
  CHECK_THAT(msg([] { rope::resolve(RopeConfig::standard(RopeStyle::Half, 10000, 512), 512); }),
             Contains("attnkit: rope.rotary_dim (512) must be <= 256"));
  CHECK(msg([] { rope::resolve(RopeConfig::llama3_1(RopeStyle::Half), 128); }) == "(no error)");
}

// ---- apply_rope ---------------------------------------------------------------

namespace {

template <class T>
double unit_roundoff() {
  if constexpr (std::is_same_v<T, float>) return 0.0;
  if constexpr (std::is_same_v<T, half>) return std::ldexp(1.0, -11);
  return std::ldexp(1.0, -8);
}

// Expected result of rotating token rows (read from `in` as floats) in double,
// rounded tolerance: fp32 math error + one rounding to T.
template <class T>
void check_rotated_token(const T* in, const T* out, int64_t H, int64_t head_stride, int D, int R, RopeStyle style,
                         const std::vector<double>& f, double t, double scale, double* worst) {
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> x(static_cast<size_t>(D));
    for (int d = 0; d < D; ++d) x[d] = to_float(in[h * head_stride + d]);
    const auto want = ref_rotate(style, x, R, f, t, scale);
    for (int d = 0; d < D; ++d) {
      const double got = to_float(out[h * head_stride + d]);
      const double tol = 2e-6 + 1.01 * unit_roundoff<T>() * std::abs(want[d]);
      *worst = std::max(*worst, std::abs(got - want[d]) / tol);
    }
  }
}

template <class T>
void apply_padded_case(std::mt19937_64& rng, RopeStyle style, int64_t B, int64_t S, int64_t H, int D, int R, bool bhsd,
                       bool explicit_pos, int64_t start) {
  INFO("dtype " << dtype_of<T>::name << " style " << to_string(style) << " B " << B << " S " << S << " H " << H << " D "
                << D << " R " << R << " bhsd " << bhsd << " explicit " << explicit_pos << " start " << start);
  const std::vector<T> orig = attnkit_test::random_vector<T>(static_cast<size_t>(B * S * H * D), rng);
  std::vector<int64_t> positions;
  if (explicit_pos) {
    std::uniform_int_distribution<int64_t> pos(0, 1 << 22);
    positions.resize(static_cast<size_t>(B * S));
    for (auto& p : positions) p = pos(rng);
  }
  // BSHD contiguous, or a BHSD buffer viewed as BSHD.
  const int64_t shape[4] = {B, S, H, D};
  const int64_t bshd_stride[4] = {S * H * D, H * D, D, 1};
  const int64_t bhsd_stride[4] = {H * S * D, D, S * D, 1};
  const auto& stride = bhsd ? bhsd_stride : bshd_stride;
  const RopeConfig cfg = RopeConfig::standard(style, 10000.0, R == D ? 0 : R);
  const auto f = ref_inv_freq(10000.0, R);

  std::vector<T> x1 = orig, x2 = orig, x3 = orig;
  ApplyRopeOptions o;
  o.positions = explicit_pos ? positions.data() : nullptr;
  o.start_position = start;
  o.num_threads = 1;
  apply_rope(make_view(x1.data(), shape, stride), cfg, o);
  o.num_threads = 2;
  apply_rope(make_view(x2.data(), shape, stride), cfg, o);
  o.num_threads = 3;
  apply_rope(make_view(x3.data(), shape, stride), cfg, o);
  CHECK(std::memcmp(x1.data(), x2.data(), x1.size() * sizeof(T)) == 0);
  CHECK(std::memcmp(x1.data(), x3.data(), x1.size() * sizeof(T)) == 0);

  double worst = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t off = b * stride[0] + s * stride[1];
      const double t = explicit_pos ? static_cast<double>(positions[b * S + s]) : static_cast<double>(start + s);
      check_rotated_token(orig.data() + off, x1.data() + off, H, stride[2], D, R, style, f, t, 1.0, &worst);
    }
  CHECK(worst <= 1.0);
}

}  // namespace

TEST_CASE("rope: apply_rope padded, f32/f16/bf16, strided, explicit positions, thread-count invariant", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (bool bhsd : {false, true}) {
      for (bool explicit_pos : {false, true}) {
        apply_padded_case<float>(rng, style, 2, 7, 3, 64, 64, bhsd, explicit_pos, 0);
        apply_padded_case<float>(rng, style, 1, 33, 4, 128, 128, bhsd, explicit_pos, 1000);
        apply_padded_case<float>(rng, style, 3, 5, 2, 80, 32, bhsd, explicit_pos, 7);
        apply_padded_case<half>(rng, style, 2, 9, 3, 128, 128, bhsd, explicit_pos, 3);
        apply_padded_case<half>(rng, style, 1, 4, 2, 96, 64, bhsd, explicit_pos, 0);
        apply_padded_case<bfloat16>(rng, style, 2, 9, 3, 128, 128, bhsd, explicit_pos, 3);
        apply_padded_case<bfloat16>(rng, style, 2, 3, 5, 64, 16, bhsd, explicit_pos, 1 << 20);
      }
    }
  }
}

TEST_CASE("rope: apply_rope with scalings equals rotation by the scaled frequencies", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t B = 2, S = 13, H = 3, D = 64;
  const int64_t shape[4] = {B, S, H, D};
  struct Case {
    RopeConfig cfg;
    std::vector<double> f;
    double scale;
  };
  const int64_t start = 5000;  // dynamic NTK: current length start + S = 5013 > T = 4096
  const double dyn_alpha = std::pow(2.0 * (start + S) / 4096.0 - 1.0, 64.0 / 62.0);
  std::vector<double> lin = ref_inv_freq(1e4, 64);
  for (double& v : lin) v /= 8;
  const Case cases[] = {
      {RopeConfig::linear(RopeStyle::Half, 8), lin, 1.0},
      {RopeConfig::ntk(RopeStyle::Interleaved, 8), ref_inv_freq(1e4 * std::pow(8.0, 64.0 / 62.0), 64), 1.0},
      {RopeConfig::dynamic_ntk(RopeStyle::Half, 2, 4096), ref_inv_freq(1e4 * dyn_alpha, 64), 1.0},
      {RopeConfig::yarn(RopeStyle::Half, 8, 4096), ref_yarn(1e4, 64, 8, 4096, 32, 1, true), 0.1 * std::log(8.0) + 1},
      {RopeConfig::llama3_1(RopeStyle::Interleaved), ref_llama3(500000, 64, 8, 1, 4, 8192), 1.0},
  };
  for (const auto& c : cases) {
    INFO("scaling " << to_string(c.cfg.scaling));
    const std::vector<float> orig = random_floats(static_cast<size_t>(B * S * H * D), rng);
    std::vector<float> x = orig;
    ApplyRopeOptions o;
    o.start_position = start;
    apply_rope(make_view(x.data(), shape), c.cfg, o);
    double worst = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t off = (b * S + s) * H * D;
        check_rotated_token(orig.data() + off, x.data() + off, H, D, D, 64, c.cfg.style, c.f,
                            static_cast<double>(start + s), c.scale, &worst);
      }
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("rope: apply_rope_varlen restarts positions per sequence; explicit positions; tail rows untouched",
          "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> cu = {0, 5, 5, 12, 13, 40};  // lengths 5, 0, 7, 1, 27
  const int64_t batch = 5, rows = 40, total = 43, H = 4;
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (int D : {64, 128}) {
      for (bool explicit_pos : {false, true}) {
        INFO("style " << to_string(style) << " D " << D << " explicit " << explicit_pos);
        const int64_t shape[3] = {total, H, D};
        const std::vector<bfloat16> orig =
            attnkit_test::random_vector<bfloat16>(static_cast<size_t>(total * H * D), rng);
        std::vector<int64_t> positions(static_cast<size_t>(total));
        std::uniform_int_distribution<int64_t> pos(0, 100000);
        for (auto& p : positions) p = pos(rng);
        ApplyRopeOptions o;
        o.positions = explicit_pos ? positions.data() : nullptr;
        o.start_position = 11;
        const RopeConfig cfg = RopeConfig::standard(style, 10000);
        std::vector<bfloat16> x1 = orig, x2 = orig;
        o.num_threads = 1;
        apply_rope_varlen(make_view(x1.data(), shape), cu.data(), batch, cfg, o);
        o.num_threads = 2;
        apply_rope_varlen(make_view(x2.data(), shape), cu.data(), batch, cfg, o);
        CHECK(std::memcmp(x1.data(), x2.data(), x1.size() * sizeof(bfloat16)) == 0);
        const auto f = ref_inv_freq(10000, D);
        double worst = 0;
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t r = cu[b]; r < cu[b + 1]; ++r) {
            const double t = explicit_pos ? static_cast<double>(positions[r]) : static_cast<double>(11 + r - cu[b]);
            check_rotated_token(orig.data() + r * H * D, x1.data() + r * H * D, H, D, D, D, style, f, t, 1.0, &worst);
          }
        CHECK(worst <= 1.0);
        // Rows past cu_seqlens[batch] belong to no sequence: untouched.
        CHECK(std::memcmp(x1.data() + rows * H * D, orig.data() + rows * H * D, (total - rows) * H * D * 2) == 0);
      }
    }
  }
}

TEST_CASE("rope: apply_rope validates before writing", "[rope]") {
  std::vector<float> x(2 * 3 * 2 * 8, 0.5f);
  const std::vector<float> orig = x;
  const int64_t shape[4] = {2, 3, 2, 8};
  auto msg = [&](auto&& f) {
    try {
      f();
    } catch (const attnkit::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_THAT(msg([&] { apply_rope(make_view(x.data(), shape), RopeConfig::rerope(RopeStyle::Half, 16)); }),
             Contains("rope.relative (rerope)") && Contains("cannot be applied to q and k separately"));
  CHECK_THAT(msg([&] { apply_rope(make_view(x.data(), shape), RopeConfig::leaky_rerope(RopeStyle::Half, 16, 4)); }),
             Contains("rope.relative (leaky_rerope)"));
  CHECK_THAT(msg([&] { apply_rope(make_view(x.data(), shape), RopeConfig::standard(RopeStyle::Half, 1e4, 10)); }),
             Contains("attnkit: rope.rotary_dim (10) must be <= head_dim (8)"));
  const int64_t bad_stride[4] = {48, 16, 8, 2};
  const int64_t half_shape[4] = {2, 3, 2, 4};
  CHECK_THAT(
      msg([&] { apply_rope(make_view(x.data(), half_shape, bad_stride), RopeConfig::standard(RopeStyle::Half)); }),
      Contains("attnkit: x.stride[3] (2) must be 1"));
  CHECK_THAT(msg([&] {
               ApplyRopeOptions o;
               o.num_threads = -1;
               apply_rope(make_view(x.data(), shape), RopeConfig::standard(RopeStyle::Half), o);
             }),
             Contains("attnkit: num_threads (-1) must be >= 0"));
  CHECK_THAT(msg([&] {
               ApplyRopeOptions o;
               o.start_position = -3;
               apply_rope(make_view(x.data(), shape), RopeConfig::standard(RopeStyle::Half), o);
             }),
             Contains("attnkit: start_position (-3) must be >= 0"));
  const int64_t vshape[3] = {6, 2, 8};
  const std::vector<int32_t> cu_bad = {0, 4, 2};
  CHECK_THAT(msg([&] {
               apply_rope_varlen(make_view(x.data(), vshape), cu_bad.data(), 2, RopeConfig::standard(RopeStyle::Half));
             }),
             Contains("attnkit: cu_seqlens[2] (2) must be >= cu_seqlens[1] (4)"));
  const std::vector<int32_t> cu_long = {0, 4, 7};
  CHECK_THAT(msg([&] {
               apply_rope_varlen(make_view(x.data(), vshape), cu_long.data(), 2, RopeConfig::standard(RopeStyle::Half));
             }),
             Contains("attnkit: cu_seqlens[batch] (7) must be <= the rows of x (6)"));
  CHECK_THAT(
      msg([&] { apply_rope_varlen(make_view(x.data(), vshape), nullptr, 2, RopeConfig::standard(RopeStyle::Half)); }),
      Contains("attnkit: cu_seqlens must not be null"));
  CHECK(x == orig);
}

// ---- ReRoPE / Leaky ReRoPE helpers ------------------------------------------------

TEST_CASE("rope: relative branches give the score at the clipped relative position", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int D = 64;
  const auto f = ref_inv_freq(10000, D);
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::Half}) {
    for (int mode = 0; mode < 2; ++mode) {
      const double w = 512, k = 16;
      const RopeConfig cfg = mode == 0 ? RopeConfig::rerope(style, w) : RopeConfig::leaky_rerope(style, w, k);
      const auto p = params_of(cfg, D);
      INFO("mode " << to_string(cfg.relative) << " style " << to_string(style));
      std::uniform_int_distribution<int64_t> pos(0, 1 << 20), small(0, 2 * 512);
      for (int trial = 0; trial < 200; ++trial) {
        int64_t qp = pos(rng), kp;
        if (trial % 3 == 0) {
          kp = std::max<int64_t>(0, qp - small(rng));  // around the window edge
        } else {
          std::uniform_int_distribution<int64_t> before(0, qp);
          kp = before(rng);
        }
        if (trial == 0) qp = 1000, kp = 1000 - 512;  // r == w exactly
        if (trial == 1) qp = 1000, kp = 1000 - 513;
        const double r = static_cast<double>(qp - kp);
        // Independent clipped distance.
        const double r_clip = r <= w ? r : (mode == 0 ? w : w + (r - w) / k);
        CHECK(rope::clipped_relative_position(p, r) == Approx(r_clip).epsilon(1e-12));
        std::vector<float> q = random_floats(D, rng), kv = random_floats(D, rng);
        // Reference: q rotated by r', k unrotated; q.k in double.
        const auto q_ref = ref_rotate(style, to_double(q), D, f, r_clip);
        double want = 0;
        for (int d = 0; d < D; ++d) want += q_ref[d] * kv[d];
        const auto rp = rope::rotation_positions(p, qp, kp);
        std::vector<float> qr = q, kr = kv;
        rope::rotate_row(p, qr.data(), rp.q);
        rope::rotate_row(p, kr.data(), rp.k);
        double got = 0;
        for (int d = 0; d < D; ++d) got += static_cast<double>(qr[d]) * kr[d];
        INFO("p " << qp << " j " << kp << " r " << r << " near " << rope::use_near_branch(p, qp, kp));
        CHECK(std::abs(got - want) < 2e-5);
        CHECK(rope::use_near_branch(p, qp, kp) == (r <= w));
      }
    }
  }
}

TEST_CASE("rope: relative tile branch agrees with the per-pair rule", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const auto p = params_of(RopeConfig::leaky_rerope(RopeStyle::Half, 37, 3), 64);
  std::uniform_int_distribution<int64_t> start(0, 300), len(1, 40);
  int seen[3] = {0, 0, 0};
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t q0 = start(rng), q1 = q0 + len(rng) - 1, k0 = start(rng), k1 = k0 + len(rng) - 1;
    bool any_near = false, any_far = false;
    for (int64_t a = q0; a <= q1; ++a)
      for (int64_t b = k0; b <= k1; ++b) (rope::use_near_branch(p, a, b) ? any_near : any_far) = true;
    const auto br = rope::relative_tile_branch(p, q0, q1, k0, k1);
    const auto want = any_near && any_far ? rope::RelativeBranch::Both
                      : any_near          ? rope::RelativeBranch::Near
                                          : rope::RelativeBranch::Far;
    INFO("q [" << q0 << ", " << q1 << "] k [" << k0 << ", " << k1 << "]");
    CHECK(br == want);
    ++seen[static_cast<int>(want)];
  }
  CHECK(seen[0] > 0);
  CHECK(seen[1] > 0);
  CHECK(seen[2] > 0);
  const auto plain = params_of(RopeConfig::standard(RopeStyle::Half), 64);
  CHECK(rope::relative_tile_branch(plain, 1000, 1010, 0, 5) == rope::RelativeBranch::Near);
  CHECK(rope::use_near_branch(plain, 100000, 0));
}

TEST_CASE("rope: vectorised f16/bf16 stores round exactly like the scalar conversions", "[rope]") {
  const uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  // Random magnitudes over the whole range, plus ties, subnormals, overflow, inf.
  std::vector<float> x(4096 + 7);
  std::uniform_real_distribution<float> mant(-2.0f, 2.0f);
  std::uniform_int_distribution<int> expo(-30, 20);
  for (auto& v : x) v = std::ldexp(mant(rng), expo(rng));
  const float special[] = {0.0f,
                           -0.0f,
                           1.0f + std::ldexp(1.0f, -11),
                           1.0f + 3 * std::ldexp(1.0f, -11),
                           65504.0f,
                           65520.0f,
                           1e-7f,
                           -3e-6f,
                           1e30f,
                           -1e30f,
                           std::numeric_limits<float>::infinity(),
                           1.00390625f /* bf16 tie */,
                           1.01171875f};
  std::copy(std::begin(special), std::end(special), x.begin());
  const int n = static_cast<int>(x.size());
  std::vector<half> h(x.size());
  std::vector<bfloat16> b(x.size());
  rope::detail::store_row(x.data(), h.data(), n);
  rope::detail::store_row(x.data(), b.data(), n);
  int bad = 0;
  for (int d = 0; d < n; ++d) {
    if (h[d].bits != half::from_float(x[d]) || b[d].bits != bfloat16::from_float(x[d])) ++bad;
  }
  CHECK(bad == 0);
}
