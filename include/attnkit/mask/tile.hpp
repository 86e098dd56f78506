// The mask concept. A mask is a small value type with
//   bool     operator()(const SeqCtx&, int64_t i, int64_t j) const;  // allowed?
//   TileKind classify(const SeqCtx&, i0, i1, j0, j1) const;           // [i0,i1) x [j0,j1)
// i is the query row within its sequence, j the key row. Both functions see
// only rows inside the valid lengths: kernels clip tiles to q_len / kv_len
// before asking, and never call a mask outside them.
//
// classify must be sound: Full means every pair is allowed, Empty means none
// is. Built-in masks are also exact (Partial means mixed); compositions may
// answer Partial for a tile that is in fact empty or full.
//
// Optionally, a mask whose rows allow one contiguous run of keys says so:
//   bool key_span(const SeqCtx&, int64_t i, int64_t& lo, int64_t& hi) const;
// true means: for every valid key j (j < kv_len), allowed(i, j) == (lo <= j && j < hi)
// (lo / hi may lie outside [0, kv_len]; lo >= hi is an empty row). false means
// "not an interval for this row": callers fall back to the predicate. Kernels
// compute a row's span once and then mask a partial tile with two integer
// compares per element instead of calling the predicate (has_key_span below).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "attnkit/core/macros.hpp"
#include "attnkit/core/sequence.hpp"

namespace attnkit {

enum class TileKind : int { Empty = 0, Partial = 1, Full = 2 };

inline const char* to_string(TileKind t) {
  return t == TileKind::Empty ? "empty" : t == TileKind::Full ? "full" : "partial";
}

// CRTP tag: only types deriving from MaskBase take part in & | ~ below, so
// the operators never hijack unrelated types.
template <class Derived>
struct MaskBase {
  ATTNKIT_HDI const Derived& derived() const { return static_cast<const Derived&>(*this); }
};

template <class M>
struct is_mask {
 private:
  template <class D>
  static char test(const MaskBase<D>*);
  static long test(...);

 public:
  static constexpr bool value = sizeof(test(static_cast<const M*>(nullptr))) == sizeof(char);
};

namespace detail {
// Classification of a band of positions: rows have positions [pmin, pmax].
ATTNKIT_HDI int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
ATTNKIT_HDI int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
}  // namespace detail

// Whether M has the optional key_span member (see the top of this file).
template <class M, class = void>
struct has_key_span : std::false_type {};
template <class M>
struct has_key_span<M,
                    std::void_t<decltype(std::declval<const M&>().key_span(
                        std::declval<const SeqCtx&>(), int64_t{}, std::declval<int64_t&>(), std::declval<int64_t&>()))>>
    : std::true_type {};

// Whether key_span is a few integer operations (true) or reads memory (a
// document mask's binary search: false). Kernels recompute arithmetic spans
// where needed and keep the others once found. Compositions: traits.hpp.
template <class M>
struct key_span_is_arithmetic : std::true_type {};

}  // namespace attnkit
