// Fused RoPE for the CPU kernel: resolved once per call, applied to Q rows as a
// block is packed and to K rows as a tile is copied (no extra pass over
// memory). Integer positions use a cos/sin table over the range of positions
// the call touches; positions outside it (or a range too large to tabulate)
// are rotated with angles computed on the fly, fp32-accurate either way.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "attnkit/core/error.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/rope/config.hpp"
#include "attnkit/rope/frequencies.hpp"
#include "attnkit/rope/rotate.hpp"

namespace attnkit {
namespace cpu {
namespace detail {

// Tables larger than this many positions are not built (rows are rotated with
// on-the-fly angles instead): 2^18 positions x 64 pairs x 8 bytes = 128 MiB.
inline constexpr int64_t kMaxRopeTablePositions = int64_t(1) << 18;

struct RopeFusion {
  rope::RopeParams params;
  std::unique_ptr<rope::RopeTable> table;

  bool enabled() const { return params.enabled(); }
  bool relative() const { return params.is_relative(); }

  // Rotates the first R dims of x to `position` (integer positions hit the
  // table; fractional ones, used by Leaky ReRoPE's far branch, do not).
  void rotate(float* x, double position) const {
    const int64_t t = static_cast<int64_t>(position);
    if (table && static_cast<double>(t) == position && table->contains(t))
      rope::rotate_with(params, x, table->cos_row(t), table->sin_row(t));
    else
      rope::rotate_row(params, x, position);
  }
};

template <class T>
void position_range(const AttentionParams<T>& p, int64_t& lo, int64_t& hi) {
  const ProblemShape& s = p.shape;
  lo = INT64_MAX;
  hi = INT64_MIN;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.q_len(b), lk = s.kv_len(b);
    if (p.q_positions) {
      for (int64_t i = 0; i < lq; ++i) lo = std::min(lo, p.q_position(b, i)), hi = std::max(hi, p.q_position(b, i));
    } else if (lq > 0) {
      lo = std::min(lo, p.q_position(b, 0));
      hi = std::max(hi, p.q_position(b, lq - 1));
    }
    if (p.kv_positions) {
      for (int64_t j = 0; j < lk; ++j) lo = std::min(lo, p.kv_position(b, j)), hi = std::max(hi, p.kv_position(b, j));
    } else if (lk > 0) {
      lo = std::min<int64_t>(lo, 0);
      hi = std::max(hi, lk - 1);
    }
  }
}

template <class T>
RopeFusion make_rope_fusion(const AttentionParams<T>& p, const AttentionOptions& o, int threads) {
  RopeFusion f;
  if (!o.rope) return f;
  f.params = rope::resolve(*o.rope, p.shape.head_dim, rope::attention_seq_len(p));
  if (!f.enabled()) return f;
  int64_t lo, hi;
  position_range(p, lo, hi);
  if (hi >= lo && hi - lo + 1 <= kMaxRopeTablePositions)
    f.table = std::make_unique<rope::RopeTable>(f.params, lo, hi - lo + 1, threads);
  return f;
}

}  // namespace detail
}  // namespace cpu
}  // namespace attnkit
