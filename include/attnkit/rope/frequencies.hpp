// From a RopeConfig to what a kernel needs: RopeParams, a device-passable POD
// holding the per-pair inverse frequencies (in double) after every scaling has
// been applied, plus the attention temperature and the relative mode.
// fill_cos_sin turns a position into cos/sin (fp32-accurate at any position);
// RopeTable caches cos/sin rows for a range of integer positions on the host.
//
// Formulas (docs/rope.md has the derivations), with R the rotary dim and
// i < R/2 the pair index:
//   None       inv_freq_i = base^(-2i/R)
//   Linear     inv_freq_i = base^(-2i/R) / factor              (g(t) = t / factor)
//   NTK        inv_freq_i = (alpha base)^(-2i/R), alpha = factor^(R/(R-2))
//   DynamicNTK alpha = (factor L / T - (factor - 1))^(R/(R-2)), L = max(seq_len, T)
//   YaRN       inv_freq_i = interp_i (1 - e_i) + extrap_i e_i, e_i = 1 - ramp(i)
//              (Hugging Face's _compute_yarn_parameters), temperature 0.1 ln(factor) + 1
//   Llama3     wavelength-banded interpolation (Hugging Face's _compute_llama3_parameters)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "attnkit/core/error.hpp"
#include "attnkit/core/macros.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/rope/config.hpp"

namespace attnkit {
namespace rope {

inline constexpr double kPi = 3.141592653589793238462643383279502884;

// R <= 256 = kMaxHeadDim: every supported head dim can be fully rotated.
inline constexpr int kMaxRotaryPairs = 128;

// Everything a kernel needs to rotate a row, resolved on the host. Plain data:
// pass it by value to a CUDA kernel (about 1 KiB) or keep it in constant memory.
struct RopeParams {
  int32_t rotary_dim = 0;  // R (even, <= head dim); 0 = RoPE off
  int32_t pairs = 0;       // R / 2
  RopeStyle style = RopeStyle::Half;
  RopeRelative relative = RopeRelative::None;
  // Multiplies cos and sin (so each rotated dim of q and of k; the logit gets
  // its square), exactly as Hugging Face scales cos/sin by attention_scaling.
  // Dims >= R are not scaled. YaRN's temperature; 1 for every other scaling.
  float attention_scaling = 1.0f;
  double window = 0.0;       // ReRoPE / Leaky ReRoPE w
  double inv_leaky_k = 1.0;  // 1 / k (Leaky ReRoPE)
  // Radians per position of pair i. Kept in double: a position of 2^24 times
  // an fp32 frequency would already be off by ~1 radian.
  double inv_freq[kMaxRotaryPairs] = {};

  ATTNKIT_HDI bool enabled() const { return pairs > 0; }
  ATTNKIT_HDI bool is_relative() const { return relative != RopeRelative::None; }
};

namespace detail {

// YaRN: the (fractional) pair index whose wavelength fits `rotations` times
// into the trained context T: R ln(T / (2 pi rotations)) / (2 ln base).
inline double yarn_correction_dim(double rotations, double R, double base, double T) {
  return R * std::log(T / (rotations * 2.0 * kPi)) / (2.0 * std::log(base));
}

inline double yarn_default_attention_factor(double factor) {
  return factor <= 1.0 ? 1.0 : 0.1 * std::log(factor) + 1.0;
}

}  // namespace detail

// Resolve `cfg` for a head dim D. `seq_len` is the current sequence length
// (max position + 1), used only by DynamicNTK; Hugging Face recomputes the base
// from it once it exceeds the trained context. Throws attnkit::Error.
inline RopeParams resolve(const RopeConfig& cfg, int64_t head_dim, int64_t seq_len = 0) {
  using attnkit::detail::concat;
  using attnkit::detail::require;
  cfg.validate();
  require(head_dim >= 1, "head_dim", head_dim, "must be >= 1");
  require(seq_len >= 0, "seq_len", seq_len, "must be >= 0");
  const int64_t R = cfg.rotary_dim == 0 ? head_dim : cfg.rotary_dim;
  if (cfg.rotary_dim == 0)
    require(R % 2 == 0, "head_dim", head_dim, "must be even when rope.rotary_dim is 0 (the whole head is rotated)");
  require(R <= head_dim, "rope.rotary_dim", R, concat("must be <= head_dim (", head_dim, ")"));
  require(R / 2 <= kMaxRotaryPairs, "rope.rotary_dim", R, concat("must be <= ", 2 * kMaxRotaryPairs));
  const bool ntk_like = cfg.scaling == RopeScaling::NTK || cfg.scaling == RopeScaling::DynamicNTK;
  if (ntk_like)
    require(R > 2, "rope.rotary_dim", R,
            concat("must be > 2 for scaling '", to_string(cfg.scaling), "' (alpha = factor^(R/(R-2)))"));

  RopeParams p;
  p.rotary_dim = static_cast<int32_t>(R);
  p.pairs = static_cast<int32_t>(R / 2);
  p.style = cfg.style;
  p.relative = cfg.relative;
  p.window = cfg.window;
  p.inv_leaky_k = cfg.relative == RopeRelative::LeakyReRoPE ? 1.0 / cfg.leaky_k : 1.0;

  const double Rd = static_cast<double>(R);
  double base = cfg.base;
  if (cfg.scaling == RopeScaling::NTK) {
    base *= std::pow(cfg.factor, Rd / (Rd - 2.0));
  } else if (cfg.scaling == RopeScaling::DynamicNTK) {
    const double T = static_cast<double>(cfg.original_max_position);
    const double L = std::max(static_cast<double>(seq_len), T);
    base *= std::pow(cfg.factor * L / T - (cfg.factor - 1.0), Rd / (Rd - 2.0));
  }
  for (int i = 0; i < p.pairs; ++i) p.inv_freq[i] = std::pow(base, -2.0 * i / Rd);

  switch (cfg.scaling) {
    case RopeScaling::Linear:
      for (int i = 0; i < p.pairs; ++i) p.inv_freq[i] /= cfg.factor;
      break;
    case RopeScaling::YaRN: {
      const double T = static_cast<double>(cfg.original_max_position);
      double lo = detail::yarn_correction_dim(cfg.beta_fast, Rd, cfg.base, T);
      double hi = detail::yarn_correction_dim(cfg.beta_slow, Rd, cfg.base, T);
      if (cfg.yarn_truncate) {
        lo = std::floor(lo);
        hi = std::ceil(hi);
      }
      lo = std::max(lo, 0.0);
      hi = std::min(hi, Rd - 1.0);
      if (lo == hi) hi += 0.001;  // avoid a division by zero, as the reference code does
      for (int i = 0; i < p.pairs; ++i) {
        const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
        const double extrapolation_weight = 1.0 - ramp;  // 1: keep the trained frequency
        const double extrap = p.inv_freq[i];
        const double interp = extrap / cfg.factor;
        p.inv_freq[i] = interp * (1.0 - extrapolation_weight) + extrap * extrapolation_weight;
      }
      p.attention_scaling = static_cast<float>(
          cfg.attention_factor > 0.0 ? cfg.attention_factor : detail::yarn_default_attention_factor(cfg.factor));
      break;
    }
    case RopeScaling::Llama3: {
      const double T = static_cast<double>(cfg.original_max_position);
      const double low_freq_wavelen = T / cfg.low_freq_factor;    // longer: interpolate
      const double high_freq_wavelen = T / cfg.high_freq_factor;  // shorter: keep
      for (int i = 0; i < p.pairs; ++i) {
        const double f = p.inv_freq[i];
        const double wavelen = 2.0 * kPi / f;
        if (wavelen < high_freq_wavelen) continue;
        if (wavelen > low_freq_wavelen) {
          p.inv_freq[i] = f / cfg.factor;
          continue;
        }
        const double smooth = (T / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
        p.inv_freq[i] = (1.0 - smooth) * f / cfg.factor + smooth * f;
      }
      break;
    }
    default:
      break;
  }
  return p;
}

// ---- angles -----------------------------------------------------------------
// Accuracy at large positions: the angle t * inv_freq is formed in double and
// reduced to [-pi, pi] in double with a three-part Cody-Waite 2*pi (the first
// two parts have 24 significant bits, so n * part is exact for |n| < 2^29,
// i.e. angles up to ~3e9 radians); only the reduced angle is rounded to float
// for sincosf. The error is then ~1 fp32 ulp of cos/sin whatever the position
// (tested at 2^20 and 2^24), where an fp32 angle would be off by radians.
namespace detail {
inline constexpr double kTwoPi1 = 6.283185005187988;       // 0x1.921fb4p+2
inline constexpr double kTwoPi2 = 3.0199157663446385e-07;  // 0x1.4442d0p-22
inline constexpr double kTwoPi3 = 2.1561211432632476e-14;  // 2*pi - kTwoPi1 - kTwoPi2
inline constexpr double kInvTwoPi = 0.15915494309189535;
}  // namespace detail

// The angle of pair i at (possibly fractional) position t, reduced to [-pi, pi].
ATTNKIT_HDI float reduced_angle(double position, double inv_freq) {
  const double a = position * inv_freq;
#if defined(__CUDA_ARCH__)
  const double n = ::rint(a * detail::kInvTwoPi);
#else
  const double n = std::rint(a * detail::kInvTwoPi);
#endif
  const double r = ((a - n * detail::kTwoPi1) - n * detail::kTwoPi2) - n * detail::kTwoPi3;
  return static_cast<float>(r);
}

ATTNKIT_HDI void sincos_reduced(float angle, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  ::sincosf(angle, s, c);  // accurate sincosf: |angle| <= pi takes its fast path
#else
  *s = std::sin(angle);
  *c = std::cos(angle);
#endif
}

// cos/sin of every pair at `position`, times attention_scaling:
// cos[i], sin[i] for i < pairs. The one place angles are turned into numbers;
// rotate.hpp and RopeTable both go through it.
ATTNKIT_HD inline void fill_cos_sin(const RopeParams& p, double position, float* cos_out, float* sin_out) {
  for (int i = 0; i < p.pairs; ++i) {
    float s, c;
    sincos_reduced(reduced_angle(position, p.inv_freq[i]), &s, &c);
    cos_out[i] = c * p.attention_scaling;
    sin_out[i] = s * p.attention_scaling;
  }
}

// ---- host tables ------------------------------------------------------------
// cos/sin rows for the integer positions [first, first + count), row-major
// [count][pairs] (row of position t at (t - first) * pairs). For hot loops that
// rotate many heads or rows at the same positions (apply_rope, the fused
// kernel's K/Q tiles). Built in parallel with OpenMP when available; the
// values do not depend on the thread count.
class RopeTable {
 public:
  RopeTable() = default;
  // num_threads: 0 = OpenMP's default, 1 = serial.
  RopeTable(const RopeParams& p, int64_t first_position, int64_t count, int num_threads = 0)
      : first_(first_position), count_(count), pairs_(p.pairs) {
    attnkit::detail::require(count >= 0, "count", count, "must be >= 0");
    const size_t n = static_cast<size_t>(count) * static_cast<size_t>(pairs_);
    cos_.resize(n);
    sin_.resize(n);
#if defined(_OPENMP)
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && count * pairs_ > 16384)
#else
    (void)num_threads;
#endif
    for (int64_t r = 0; r < count; ++r) {
      const size_t off = static_cast<size_t>(r) * static_cast<size_t>(pairs_);
      fill_cos_sin(p, static_cast<double>(first_position + r), &cos_[off], &sin_[off]);
    }
  }

  int64_t first_position() const { return first_; }
  int64_t count() const { return count_; }
  int pairs() const { return pairs_; }
  bool contains(int64_t position) const { return position >= first_ && position - first_ < count_; }

  const float* cos_row(int64_t position) const { return cos_.data() + offset(position); }
  const float* sin_row(int64_t position) const { return sin_.data() + offset(position); }

 private:
  size_t offset(int64_t position) const { return static_cast<size_t>(position - first_) * static_cast<size_t>(pairs_); }
  int64_t first_ = 0;
  int64_t count_ = 0;
  int pairs_ = 0;
  std::vector<float> cos_, sin_;
};

// DynamicNTK's "current sequence length" for one attention call, so every
// kernel resolves the same frequencies: 1 + the largest query or key position
// of the batch (Hugging Face: max(position_ids) + 1; with a KV cache that is the
// total length). Default positions need only the lengths: keys sit at j < Lk,
// queries at p(i) <= Lk - 1 (bottom-right) or i <= Lq - 1 (top-left). Explicit
// positions are scanned, so they must be host-readable here; device callers
// with device-resident positions pass the bound they know instead.
template <class T>
int64_t attention_seq_len(const AttentionParams<T>& a) {
  const ProblemShape& s = a.shape;
  int64_t m = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.q_len(b), lk = s.kv_len(b);
    for (int64_t i = 0; i < (a.q_positions ? lq : std::min<int64_t>(lq, 1)); ++i)
      m = std::max(m, 1 + (a.q_positions ? a.q_position(b, i) : a.q_position(b, lq - 1)));
    for (int64_t j = 0; j < (a.kv_positions ? lk : std::min<int64_t>(lk, 1)); ++j)
      m = std::max(m, 1 + (a.kv_positions ? a.kv_position(b, j) : lk - 1));
  }
  return m;
}

// Largest position in `positions[0..n)` plus one: the "current sequence
// length" Hugging Face's dynamic NTK uses (max(position_ids) + 1).
inline int64_t sequence_length_of(const int64_t* positions, int64_t n) {
  int64_t m = -1;
  for (int64_t t = 0; t < n; ++t) m = std::max(m, positions[t]);
  return m + 1;
}

}  // namespace rope
}  // namespace attnkit
