// RopeConfig: one plain description of every rotary-embedding variant real
// models use (DESIGN §4). It says *what* to compute; rope/frequencies.hpp turns
// it into the per-pair inverse frequencies a kernel needs (RopeParams), and
// rope/rotate.hpp holds the host/device rotation math.
//
// The struct is a POD so it can be copied to the device as is; only the
// factories and validate() are host code (they throw attnkit::Error).
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/core/error.hpp"

namespace attnkit {

// Which dims form a rotated pair. Mixing them up gives fluent-looking garbage
// and no error (DESIGN §9), so the factories make the caller name one.
enum class RopeStyle : int32_t {
  // (x[2i], x[2i+1]): the complex view of adjacent pairs. Meta's Llama
  // reference (freqs_cis), GPT-J.
  Interleaved = 0,
  // (x[i], x[i + R/2]): rotate_half. Hugging Face Llama/Mistral/Qwen, GPT-NeoX.
  Half = 1,
};

// How the inverse frequencies (or the positions) are stretched to reach a
// context longer than the one the model was trained on (T -> T' = factor * T).
enum class RopeScaling : int32_t {
  None = 0,
  Linear = 1,      // position interpolation: g(t) = t / factor
  NTK = 2,         // static NTK-aware: base *= factor^(R/(R-2))
  DynamicNTK = 3,  // Hugging Face "dynamic": the NTK base recomputed from the current length
  YaRN = 4,        // NTK-by-parts ramp + attention temperature (mscale)
  Llama3 = 5,      // Llama-3.1: low/high frequency factors with a smooth band between
};

// ReRoPE / Leaky ReRoPE act on the relative position r = p - j and therefore
// only exist inside a fused attention kernel (rope/rotate.hpp: relative helpers).
enum class RopeRelative : int32_t {
  None = 0,
  ReRoPE = 1,       // r' = r for r <= w, w beyond
  LeakyReRoPE = 2,  // r' = r for r <= w, w + (r - w) / k beyond
};

inline const char* to_string(RopeStyle s) { return s == RopeStyle::Interleaved ? "interleaved" : "half"; }
inline const char* to_string(RopeScaling s) {
  switch (s) {
    case RopeScaling::None:
      return "none";
    case RopeScaling::Linear:
      return "linear";
    case RopeScaling::NTK:
      return "ntk";
    case RopeScaling::DynamicNTK:
      return "dynamic_ntk";
    case RopeScaling::YaRN:
      return "yarn";
    case RopeScaling::Llama3:
      return "llama3";
  }
  return "?";
}
inline const char* to_string(RopeRelative r) {
  return r == RopeRelative::None ? "none" : r == RopeRelative::ReRoPE ? "rerope" : "leaky_rerope";
}

struct RopeConfig {
  RopeStyle style = RopeStyle::Half;
  // R: the first R dims of each head are rotated, the rest pass through
  // (partial rotary: GPT-NeoX, Phi, GLM). 0 = the whole head dim.
  int64_t rotary_dim = 0;
  // theta: pair i turns at base^(-2i/R) radians per position.
  double base = 10000.0;

  RopeScaling scaling = RopeScaling::None;
  // T'/T for every scaling kind (1 = no stretch).
  double factor = 1.0;
  // T, the trained context. Needed by DynamicNTK, YaRN and Llama3.
  int64_t original_max_position = 0;

  // YaRN (Peng et al. 2023; Hugging Face defaults). Pairs that turn more than
  // beta_fast times over T keep their frequency, pairs that turn fewer than
  // beta_slow times are interpolated by 1/factor, a linear ramp in between.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  // Attention temperature: the rotated q and k are each multiplied by it (so
  // the logit by its square), as Hugging Face scales cos and sin.
  // 0 = YaRN's default 0.1 * ln(factor) + 1.
  double attention_factor = 0.0;
  // Round the ramp ends outwards (floor/ceil), as YaRN and Hugging Face's
  // default truncate=True do.
  bool yarn_truncate = true;

  // Llama-3.1 (Hugging Face "llama3"): wavelengths longer than
  // T / low_freq_factor are interpolated by 1/factor, shorter than
  // T / high_freq_factor kept, smoothly blended in between.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;

  // Relative-position clipping (fused attention only).
  RopeRelative relative = RopeRelative::None;
  double window = 0.0;   // w: distances r <= w are rotated exactly
  double leaky_k = 1.0;  // k > 0: beyond w the distance grows 1/k as fast

  // ---- factories (host) ----------------------------------------------------
  // Plain RoPE. Llama-2: base 10000; Llama-3: 500000; Qwen2: 1000000.
  static RopeConfig standard(RopeStyle style, double base = 10000.0, int64_t rotary_dim = 0) {
    RopeConfig c;
    c.style = style;
    c.base = base;
    c.rotary_dim = rotary_dim;
    return c;
  }
  // Position interpolation (Chen et al. 2023; HF "linear"): g(t) = t / factor.
  static RopeConfig linear(RopeStyle style, double factor, double base = 10000.0, int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.scaling = RopeScaling::Linear;
    c.factor = factor;
    return c;
  }
  // Static NTK-aware base scaling: base' = base * factor^(R/(R-2)).
  static RopeConfig ntk(RopeStyle style, double factor, double base = 10000.0, int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.scaling = RopeScaling::NTK;
    c.factor = factor;
    return c;
  }
  // Hugging Face "dynamic": for a current length L > T,
  // base' = base * (factor * L / T - (factor - 1))^(R/(R-2)); unchanged for L <= T.
  static RopeConfig dynamic_ntk(RopeStyle style, double factor, int64_t original_max_position, double base = 10000.0,
                                int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.scaling = RopeScaling::DynamicNTK;
    c.factor = factor;
    c.original_max_position = original_max_position;
    return c;
  }
  // YaRN with Hugging Face's defaults (beta_fast 32, beta_slow 1,
  // attention_factor 0.1 ln(factor) + 1, truncated ramp ends).
  static RopeConfig yarn(RopeStyle style, double factor, int64_t original_max_position, double base = 10000.0,
                         double beta_fast = 32.0, double beta_slow = 1.0, double attention_factor = 0.0,
                         int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.scaling = RopeScaling::YaRN;
    c.factor = factor;
    c.original_max_position = original_max_position;
    c.beta_fast = beta_fast;
    c.beta_slow = beta_slow;
    c.attention_factor = attention_factor;
    return c;
  }
  // Llama-3.1/3.2/3.3: factor 8, low 1, high 4, T 8192, base 500000 (the
  // released configs; Llama-3.2 1B/3B use factor 32).
  static RopeConfig llama3_1(RopeStyle style, double factor = 8.0, double low_freq_factor = 1.0,
                             double high_freq_factor = 4.0, int64_t original_max_position = 8192,
                             double base = 500000.0, int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.scaling = RopeScaling::Llama3;
    c.factor = factor;
    c.low_freq_factor = low_freq_factor;
    c.high_freq_factor = high_freq_factor;
    c.original_max_position = original_max_position;
    return c;
  }
  // ReRoPE(w) (Su 2023) on top of plain RoPE: distances beyond w count as w.
  static RopeConfig rerope(RopeStyle style, double window, double base = 10000.0, int64_t rotary_dim = 0) {
    RopeConfig c = standard(style, base, rotary_dim);
    c.relative = RopeRelative::ReRoPE;
    c.window = window;
    return c;
  }
  // Leaky ReRoPE(w, k): beyond w the distance grows 1/k as fast. To map a
  // trained context T onto a target T' (SEEDS note 4), k = (T' - w) / (T - w):
  // see leaky_k_for_context().
  static RopeConfig leaky_rerope(RopeStyle style, double window, double k, double base = 10000.0,
                                 int64_t rotary_dim = 0) {
    RopeConfig c = rerope(style, window, base, rotary_dim);
    c.relative = RopeRelative::LeakyReRoPE;
    c.leaky_k = k;
    return c;
  }
  // The k for which the largest target distance T' - 1 lands where the
  // trained T - 1 was: w + (T' - w)/k = T, i.e. k = (T' - w) / (T - w).
  static double leaky_k_for_context(double window, double trained, double target) {
    return (target - window) / (trained - window);
  }

  // Fluent modifiers for configs built from a factory.
  RopeConfig with_rotary_dim(int64_t r) const {
    RopeConfig c = *this;
    c.rotary_dim = r;
    return c;
  }
  RopeConfig with_relative(RopeRelative mode, double w, double k = 1.0) const {
    RopeConfig c = *this;
    c.relative = mode;
    c.window = w;
    c.leaky_k = k;
    return c;
  }

  bool is_relative() const { return relative != RopeRelative::None; }

  // Throws attnkit::Error naming the first field that breaks its rule. The
  // head-dim dependent checks (R <= D, R even) happen in rope::resolve.
  void validate() const {
    using detail::concat;
    using detail::require;
    require(style == RopeStyle::Interleaved || style == RopeStyle::Half, "rope.style", static_cast<int>(style),
            "must be RopeStyle::Interleaved or RopeStyle::Half");
    require(rotary_dim >= 0, "rope.rotary_dim", rotary_dim, "must be >= 0 (0 = head dim)");
    require(rotary_dim % 2 == 0, "rope.rotary_dim", rotary_dim, "must be even (dims are rotated in pairs)");
    require(std::isfinite(base) && base > 1.0, "rope.base", base, "must be finite and > 1");
    const int s = static_cast<int>(scaling);
    require(s >= 0 && s <= 5, "rope.scaling", s, "must be a RopeScaling value");
    if (scaling != RopeScaling::None) {
      require(std::isfinite(factor) && factor > 0.0, "rope.factor", factor,
              concat("must be finite and > 0 for scaling '", to_string(scaling), "'"));
    }
    if (scaling == RopeScaling::DynamicNTK || scaling == RopeScaling::YaRN || scaling == RopeScaling::Llama3) {
      require(original_max_position >= 1, "rope.original_max_position", original_max_position,
              concat("must be >= 1 (the trained context) for scaling '", to_string(scaling), "'"));
    }
    if (scaling == RopeScaling::YaRN) {
      require(std::isfinite(beta_fast) && std::isfinite(beta_slow) && beta_slow > 0.0, "rope.beta_slow", beta_slow,
              "must be finite and > 0");
      require(beta_fast > beta_slow, "rope.beta_fast", beta_fast,
              concat("must be greater than rope.beta_slow (", beta_slow, ")"));
      require(std::isfinite(attention_factor) && attention_factor >= 0.0, "rope.attention_factor", attention_factor,
              "must be finite and >= 0 (0 = 0.1 ln(factor) + 1)");
    }
    if (scaling == RopeScaling::Llama3) {
      require(std::isfinite(low_freq_factor) && low_freq_factor > 0.0, "rope.low_freq_factor", low_freq_factor,
              "must be finite and > 0");
      require(std::isfinite(high_freq_factor) && high_freq_factor > low_freq_factor, "rope.high_freq_factor",
              high_freq_factor, concat("must be finite and greater than rope.low_freq_factor (", low_freq_factor, ")"));
    }
    const int r = static_cast<int>(relative);
    require(r >= 0 && r <= 2, "rope.relative", r, "must be a RopeRelative value");
    if (relative != RopeRelative::None) {
      require(std::isfinite(window) && window >= 0.0, "rope.window", window, "must be finite and >= 0");
    }
    if (relative == RopeRelative::LeakyReRoPE) {
      require(std::isfinite(leaky_k) && leaky_k > 0.0, "rope.leaky_k", leaky_k, "must be finite and > 0");
    }
  }
};

}  // namespace attnkit
