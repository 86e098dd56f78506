// The rotation itself, written once for host and device (ATTNKIT_HD), on fp32
// rows. Storage dtypes convert to float before and after (apply.hpp, the
// kernels). Also the ReRoPE / Leaky ReRoPE bookkeeping: which two rotations a
// fused kernel applies for a query position p and a key position j, and which
// of the two scores it keeps.
//
// Conventions (DESIGN §4): rotating x by angle a maps a pair (x0, x1) to
//   (x0 cos a - x1 sin a,  x0 sin a + x1 cos a)
// i.e. multiplies x0 + i x1 by e^{ia} (Meta's freqs_cis; Hugging Face's
// x * cos + rotate_half(x) * sin is the same map on (x[i], x[i + R/2])).
// Then <rot(q, p), rot(k, j)> depends on p - j only.
#pragma once

#include <cstdint>

#include "attnkit/core/macros.hpp"
#include "attnkit/rope/frequencies.hpp"

// Host builds with OpenMP vectorise the rotation loops even at -O2 (GCC's
// -O2 cost model leaves them scalar); elsewhere it expands to nothing.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define ATTNKIT_ROPE_SIMD _Pragma("omp simd")
#else
#define ATTNKIT_ROPE_SIMD
#endif

namespace attnkit {
namespace rope {

// Rotate pair i of x (the first R dims of one head) by (c, s) = (cos, sin).
ATTNKIT_HDI void rotate_pair(const RopeParams& p, float* x, int i, float c, float s) {
  const int a = p.style == RopeStyle::Interleaved ? 2 * i : i;
  const int b = p.style == RopeStyle::Interleaved ? 2 * i + 1 : i + p.pairs;
  const float x0 = x[a], x1 = x[b];
  x[a] = x0 * c - x1 * s;
  x[b] = x0 * s + x1 * c;
}

// Rotate the first R dims of x in place with precomputed cos/sin rows (from
// fill_cos_sin or a RopeTable: attention_scaling already folded in). Dims >= R
// are untouched. The loops are branch-free per style so they vectorise.
ATTNKIT_HDI void rotate_with(const RopeParams& p, float* x, const float* cos, const float* sin) {
  const int n = p.pairs;
  if (p.style == RopeStyle::Interleaved) {
    ATTNKIT_ROPE_SIMD
    for (int i = 0; i < n; ++i) {
      const float x0 = x[2 * i], x1 = x[2 * i + 1];
      x[2 * i] = x0 * cos[i] - x1 * sin[i];
      x[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
    }
  } else {
    float* lo = x;
    float* hi = x + n;
    ATTNKIT_ROPE_SIMD
    for (int i = 0; i < n; ++i) {
      const float x0 = lo[i], x1 = hi[i];
      lo[i] = x0 * cos[i] - x1 * sin[i];
      hi[i] = x0 * sin[i] + x1 * cos[i];
    }
  }
}

// Rotate the first R dims of x in place for a (possibly fractional) position,
// computing each angle on the fly (fp32-accurate at any position: see
// reduced_angle). No scratch memory: suited to device code and one-off rows.
ATTNKIT_HD inline void rotate_row(const RopeParams& p, float* x, double position) {
  for (int i = 0; i < p.pairs; ++i) {
    float s, c;
    sincos_reduced(reduced_angle(position, p.inv_freq[i]), &s, &c);
    rotate_pair(p, x, i, c * p.attention_scaling, s * p.attention_scaling);
  }
}

// ---- ReRoPE / Leaky ReRoPE ----------------------------------------------------
// Both clip the relative position r = p - j (p: query position, j: key
// position):  r' = r for r <= w;  beyond w, ReRoPE r' = w and Leaky
// r' = w + (r - w) / k. A score under relative position r' is a score with q
// rotated by a and k by b for any a - b = r'. Two choices where a depends only
// on p and b only on j, so each row and each key is rotated once per branch:
//   near (r <= w):       a = p,                     b = j
//   far, ReRoPE:         a = w,                     b = 0
//   far, Leaky:          a = w + (p - w) / k,       b = j / k
// (check: a - b = w + (p - j - w) / k = w + (r - w) / k). At r = w both
// branches give r' = w, so the rule is continuous and the boundary choice does
// not matter mathematically; we take near for r <= w exactly as DESIGN §4.
//
// A fused kernel therefore keeps two rotated copies of each query row
// (near_q_position, far_q_position) and of each key row (near_k_position,
// far_k_position), computes both dot products and keeps one per pair with
// use_near_branch. K must reach the kernel unrotated. Note the ReRoPE far key
// is "rotated by 0", which still multiplies it by attention_scaling (YaRN):
// call rotate_row(p, k, 0.0) rather than skipping it when the scaling is not 1.
// With RopeRelative::None the far branch is never taken.

ATTNKIT_HDI bool use_near_branch(const RopeParams& p, int64_t q_pos, int64_t k_pos) {
  return p.relative == RopeRelative::None || static_cast<double>(q_pos - k_pos) <= p.window;
}
ATTNKIT_HDI double near_q_position(const RopeParams&, int64_t q_pos) { return static_cast<double>(q_pos); }
ATTNKIT_HDI double near_k_position(const RopeParams&, int64_t k_pos) { return static_cast<double>(k_pos); }
ATTNKIT_HDI double far_q_position(const RopeParams& p, int64_t q_pos) {
  if (p.relative == RopeRelative::ReRoPE) return p.window;
  if (p.relative == RopeRelative::LeakyReRoPE)
    return p.window + (static_cast<double>(q_pos) - p.window) * p.inv_leaky_k;
  return static_cast<double>(q_pos);
}
ATTNKIT_HDI double far_k_position(const RopeParams& p, int64_t k_pos) {
  if (p.relative == RopeRelative::ReRoPE) return 0.0;
  if (p.relative == RopeRelative::LeakyReRoPE) return static_cast<double>(k_pos) * p.inv_leaky_k;
  return static_cast<double>(k_pos);
}

// The (q, k) rotation positions for one (p, j) pair after the selection.
struct RotationPositions {
  double q = 0.0;
  double k = 0.0;
};
ATTNKIT_HDI RotationPositions rotation_positions(const RopeParams& p, int64_t q_pos, int64_t k_pos) {
  if (use_near_branch(p, q_pos, k_pos)) return {near_q_position(p, q_pos), near_k_position(p, k_pos)};
  return {far_q_position(p, q_pos), far_k_position(p, k_pos)};
}

// The clipped relative position r' itself (for references and docs).
ATTNKIT_HDI double clipped_relative_position(const RopeParams& p, double r) {
  if (p.relative == RopeRelative::None || r <= p.window) return r;
  if (p.relative == RopeRelative::ReRoPE) return p.window;
  return p.window + (r - p.window) * p.inv_leaky_k;
}

// Which branches a tile needs, from the ranges of its query and key positions
// (inclusive): kernels compute only the near scores when every r <= w, only the
// far ones when every r > w, both otherwise.
enum class RelativeBranch : int32_t { Near = 0, Far = 1, Both = 2 };
ATTNKIT_HDI RelativeBranch relative_tile_branch(const RopeParams& p, int64_t q_pos_min, int64_t q_pos_max,
                                                int64_t k_pos_min, int64_t k_pos_max) {
  if (p.relative == RopeRelative::None) return RelativeBranch::Near;
  if (static_cast<double>(q_pos_max - k_pos_min) <= p.window) return RelativeBranch::Near;
  if (static_cast<double>(q_pos_min - k_pos_max) > p.window) return RelativeBranch::Far;
  return RelativeBranch::Both;
}

}  // namespace rope
}  // namespace attnkit
