// Merging partial attention results through their log-sum-exp (DESIGN §6):
//   lse = logaddexp(lse_a, lse_b)
//   out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b
// A part with lse = -inf contributes nothing; if every part is -inf the
// result is out = 0, lse = -inf (never NaN). Used by split-KV decode, MoBA,
// cascades; public for users who split work themselves.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit {

namespace detail {

// Merges `parts` partial rows (row p at out_parts + p * part_stride, lse_parts[p * lse_stride])
// into one, in a fixed order (results do not depend on thread counts).
template <class TIn>
inline float merge_rows(const TIn* out_parts, int64_t part_stride, const float* lse_parts, int64_t lse_stride,
                        int64_t parts, int64_t dv, float* out) {
  const float ninf = -std::numeric_limits<float>::infinity();
  float mx = ninf;
  for (int64_t p = 0; p < parts; ++p) mx = std::max(mx, lse_parts[p * lse_stride]);
  for (int64_t d = 0; d < dv; ++d) out[d] = 0.0f;
  if (mx == ninf) return ninf;
  double sum = 0.0;
  for (int64_t p = 0; p < parts; ++p) sum += std::exp(static_cast<double>(lse_parts[p * lse_stride]) - mx);
  const float lse = mx + static_cast<float>(std::log(sum));
  for (int64_t p = 0; p < parts; ++p) {
    const float l = lse_parts[p * lse_stride];
    if (l == ninf) continue;
    const float w = std::exp(l - lse);
    const TIn* o = out_parts + p * part_stride;
    for (int64_t d = 0; d < dv; ++d) out[d] += w * to_float(o[d]);
  }
  return lse;
}

template <class V>
void require_rows_heads_dim(const V& v, const char* name, int64_t rows, int64_t heads, int64_t dv) {
  require_not_null(v.data, name);
  require(v.stride[2] == 1, concat(name, ".stride[2]").c_str(), v.stride[2], "must be 1 (last dimension contiguous)");
  require(v.shape[0] == rows, concat(name, ".shape[0]").c_str(), v.shape[0], concat("must equal ", rows));
  require(v.shape[1] == heads, concat(name, ".shape[1]").c_str(), v.shape[1], concat("must equal ", heads));
  require(v.shape[2] == dv, concat(name, ".shape[2]").c_str(), v.shape[2], concat("must equal ", dv));
}

}  // namespace detail

// Merge two states: v_* [rows, heads, dv] (any strides, last contiguous),
// s_* [rows, heads] contiguous natural-log LSE. Output may alias input a.
template <class TA, class TB, class TO>
void merge_state(const Tensor3<TA>& v_a, const float* s_a, const Tensor3<TB>& v_b, const float* s_b,
                 const Tensor3<TO>& v_out, float* s_out) {
  const int64_t rows = v_a.shape[0], heads = v_a.shape[1], dv = v_a.shape[2];
  detail::require_rows_heads_dim(v_a, "v_a", rows, heads, dv);
  detail::require_rows_heads_dim(v_b, "v_b", rows, heads, dv);
  detail::require_rows_heads_dim(v_out, "v_out", rows, heads, dv);
  detail::require_not_null(s_a, "s_a");
  detail::require_not_null(s_b, "s_b");
  detail::require_not_null(s_out, "s_out");
  std::vector<float> tmp(static_cast<size_t>(2 * dv)), lse(2), res(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t d = 0; d < dv; ++d) {
        tmp[d] = to_float(v_a(r, h, d));
        tmp[dv + d] = to_float(v_b(r, h, d));
      }
      lse[0] = s_a[r * heads + h];
      lse[1] = s_b[r * heads + h];
      const float l = detail::merge_rows(tmp.data(), dv, lse.data(), 1, 2, dv, res.data());
      for (int64_t d = 0; d < dv; ++d) v_out(r, h, d) = from_float<std::remove_const_t<TO>>(res[d]);
      s_out[r * heads + h] = l;
    }
}

// Merge P states: v [P, rows, heads, dv], s [P, rows, heads] contiguous.
template <class TI, class TO>
void merge_states(const Tensor4<TI>& v, const float* s, const Tensor3<TO>& v_out, float* s_out) {
  const int64_t parts = v.shape[0], rows = v.shape[1], heads = v.shape[2], dv = v.shape[3];
  detail::require_not_null(v.data, "v");
  detail::require(parts >= 1, "num_states", parts, "must be >= 1");
  detail::require(v.stride[3] == 1, "v.stride[3]", v.stride[3], "must be 1 (last dimension contiguous)");
  detail::require_rows_heads_dim(v_out, "v_out", rows, heads, dv);
  detail::require_not_null(s, "s");
  detail::require_not_null(s_out, "s_out");
  std::vector<float> tmp(static_cast<size_t>(parts * dv)), lse(static_cast<size_t>(parts)),
      res(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t p = 0; p < parts; ++p) {
        for (int64_t d = 0; d < dv; ++d) tmp[p * dv + d] = to_float(v(p, r, h, d));
        lse[p] = s[(p * rows + r) * heads + h];
      }
      const float l = detail::merge_rows(tmp.data(), dv, lse.data(), 1, parts, dv, res.data());
      for (int64_t d = 0; d < dv; ++d) v_out(r, h, d) = from_float<std::remove_const_t<TO>>(res[d]);
      s_out[r * heads + h] = l;
    }
}

}  // namespace attnkit
