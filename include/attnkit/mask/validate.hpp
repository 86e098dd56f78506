// Host-side checks of mask parameters (DESIGN §7), run by every public entry
// before anything is written. Masks are plain device-friendly values, so the
// checks live here rather than in constructors.
#pragma once

#include "attnkit/core/error.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/mask/basic.hpp"
#include "attnkit/mask/block_sparse.hpp"
#include "attnkit/mask/compose.hpp"
#include "attnkit/mask/custom.hpp"
#include "attnkit/mask/document.hpp"
#include "attnkit/mask/prefix_lm.hpp"
#include "attnkit/mask/window.hpp"

namespace attnkit {

// Generic masks (full, causal, padding, custom) have nothing to check.
template <class M>
void validate_mask(const M&) {}

inline void validate_mask(const SlidingWindowMask& m) {
  detail::require(m.window >= 1, "window", m.window, "must be >= 1 (number of keys including the query itself)");
}
inline void validate_mask(const LocalMask& m) {
  detail::require(m.left >= -1, "left", m.left, "must be >= -1 (-1 = unbounded)");
  detail::require(m.right >= -1, "right", m.right, "must be >= -1 (-1 = unbounded)");
}
inline void validate_mask(const SinkWindowMask& m) {
  detail::require(m.sinks >= 0, "sinks", m.sinks, "must be >= 0");
  detail::require(m.window >= 1, "window", m.window, "must be >= 1 (number of keys including the query itself)");
}
inline void validate_mask(const PrefixLMMask& m) { detail::require(m.prefix >= 0, "prefix", m.prefix, "must be >= 0"); }
inline void validate_mask(const DocumentMask& m) { detail::require_not_null(m.kv_ids, "document kv_ids"); }
inline void validate_mask(const BlockSparseMask& m) {
  detail::require_not_null(m.map, "block_sparse map");
  detail::require(m.block_q >= 1, "block_q", m.block_q, "must be >= 1");
  detail::require(m.block_k >= 1, "block_k", m.block_k, "must be >= 1");
  detail::require(m.num_rows >= 1, "block_sparse num_rows", m.num_rows, "must be >= 1");
  detail::require(m.num_cols >= 1, "block_sparse num_cols", m.num_cols, "must be >= 1");
}
template <class A, class B>
void validate_mask(const AndMask<A, B>& m) {
  validate_mask(m.a);
  validate_mask(m.b);
}
template <class A, class B>
void validate_mask(const OrMask<A, B>& m) {
  validate_mask(m.a);
  validate_mask(m.b);
}
template <class A>
void validate_mask(const NotMask<A>& m) {
  validate_mask(m.a);
}
template <class A>
void validate_mask(const UntiledMask<A>& m) {
  validate_mask(m.a);
}

// Checks that need the problem's capacity: a block-sparse map must cover the
// longest sequence.
template <class M>
void validate_mask_extent(const M&, int64_t, int64_t) {}
inline void validate_mask_extent(const BlockSparseMask& m, int64_t max_q, int64_t max_k) {
  const int64_t rows = (max_q + m.block_q - 1) / m.block_q, cols = (max_k + m.block_k - 1) / m.block_k;
  detail::require(m.num_rows >= rows, "block_sparse num_rows", m.num_rows,
                  detail::concat("must cover ceil(max_q / block_q) = ", rows, " blocks"));
  detail::require(m.num_cols >= cols, "block_sparse num_cols", m.num_cols,
                  detail::concat("must cover ceil(max_k / block_k) = ", cols, " blocks"));
}
template <class A, class B>
void validate_mask_extent(const AndMask<A, B>& m, int64_t q, int64_t k) {
  validate_mask_extent(m.a, q, k);
  validate_mask_extent(m.b, q, k);
}
template <class A, class B>
void validate_mask_extent(const OrMask<A, B>& m, int64_t q, int64_t k) {
  validate_mask_extent(m.a, q, k);
  validate_mask_extent(m.b, q, k);
}
template <class A>
void validate_mask_extent(const NotMask<A>& m, int64_t q, int64_t k) {
  validate_mask_extent(m.a, q, k);
}
template <class A>
void validate_mask_extent(const UntiledMask<A>& m, int64_t q, int64_t k) {
  validate_mask_extent(m.a, q, k);
}

// Checks that need the per-sequence lengths (host-readable only). A document
// mask without q_ids reads the query's document at its position p(i), which
// lies inside the keys only when Lq <= Lk.
template <class M>
void validate_mask_lengths(const M&, const ProblemShape&) {}
inline void validate_mask_lengths(const DocumentMask& m, const ProblemShape& s) {
  if (m.q_ids) return;
  for (int64_t b = 0; b < s.batch; ++b)
    if (s.q_len(b) > s.kv_len(b))
      detail::fail(detail::concat(
          "document mask without q_ids: sequence ", b, " has ", s.q_len(b), " queries but only ", s.kv_len(b),
          " keys; query documents are read at the query positions, so pass q_ids when Lq > Lk"));
}
template <class A, class B>
void validate_mask_lengths(const AndMask<A, B>& m, const ProblemShape& s) {
  validate_mask_lengths(m.a, s);
  validate_mask_lengths(m.b, s);
}
template <class A, class B>
void validate_mask_lengths(const OrMask<A, B>& m, const ProblemShape& s) {
  validate_mask_lengths(m.a, s);
  validate_mask_lengths(m.b, s);
}
template <class A>
void validate_mask_lengths(const NotMask<A>& m, const ProblemShape& s) {
  validate_mask_lengths(m.a, s);
}
template <class A>
void validate_mask_lengths(const UntiledMask<A>& m, const ProblemShape& s) {
  validate_mask_lengths(m.a, s);
}

// Every mask check a public entry runs before writing anything; the
// per-sequence lengths only when they are host-readable.
template <class M>
void validate_mask_for(const M& m, const ProblemShape& s, bool host_lengths = true) {
  validate_mask(m);
  validate_mask_extent(m, s.q_capacity, s.kv_capacity);
  if (host_lengths) validate_mask_lengths(m, s);
}

}  // namespace attnkit
