// Masks compose as predicates (never by adding large negative floats, which
// overflows to -inf + x): `a & b`, `a | b`, `~a` build new functor types the
// compiler sees through. Tile classification composes exactly where it can.
#pragma once

#include <type_traits>

#include "attnkit/mask/tile.hpp"

namespace attnkit {

template <class A, class B>
struct AndMask : MaskBase<AndMask<A, B>> {
  A a;
  B b;
  AndMask() = default;
  ATTNKIT_HD AndMask(const A& x, const B& y) : a(x), b(y) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return a(s, i, j) && b(s, i, j); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const TileKind ta = a.classify(s, i0, i1, j0, j1);
    if (ta == TileKind::Empty) return TileKind::Empty;
    const TileKind tb = b.classify(s, i0, i1, j0, j1);
    if (tb == TileKind::Empty) return TileKind::Empty;
    return (ta == TileKind::Full && tb == TileKind::Full) ? TileKind::Full : TileKind::Partial;
  }
  // Two runs intersect in one run.
  template <class A2 = A, class = std::enable_if_t<has_key_span<A2>::value && has_key_span<B>::value>>
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    int64_t la = 0, ha = 0, lb = 0, hb = 0;
    if (!a.key_span(s, i, la, ha) || !b.key_span(s, i, lb, hb)) return false;
    lo = detail::imax(la, lb), hi = detail::imin(ha, hb);
    return true;
  }
};

template <class A, class B>
struct OrMask : MaskBase<OrMask<A, B>> {
  A a;
  B b;
  OrMask() = default;
  ATTNKIT_HD OrMask(const A& x, const B& y) : a(x), b(y) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return a(s, i, j) || b(s, i, j); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const TileKind ta = a.classify(s, i0, i1, j0, j1);
    if (ta == TileKind::Full) return TileKind::Full;
    const TileKind tb = b.classify(s, i0, i1, j0, j1);
    if (tb == TileKind::Full) return TileKind::Full;
    return (ta == TileKind::Empty && tb == TileKind::Empty) ? TileKind::Empty : TileKind::Partial;
  }
  // Two runs unite in one run when they touch or overlap among the valid keys
  // (an empty run adds nothing); otherwise the row is not one run.
  template <class A2 = A, class = std::enable_if_t<has_key_span<A2>::value && has_key_span<B>::value>>
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    int64_t la = 0, ha = 0, lb = 0, hb = 0;
    if (!a.key_span(s, i, la, ha) || !b.key_span(s, i, lb, hb)) return false;
    la = detail::imax(la, 0), ha = detail::imin(ha, s.kv_len);
    lb = detail::imax(lb, 0), hb = detail::imin(hb, s.kv_len);
    if (la >= ha) return lo = lb, hi = hb, true;
    if (lb >= hb) return lo = la, hi = ha, true;
    lo = detail::imin(la, lb), hi = detail::imax(ha, hb);
    return la <= hb && lb <= ha;
  }
};

template <class A>
struct NotMask : MaskBase<NotMask<A>> {
  A a;
  NotMask() = default;
  ATTNKIT_HD explicit NotMask(const A& x) : a(x) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return !a(s, i, j); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const TileKind t = a.classify(s, i0, i1, j0, j1);
    return t == TileKind::Full ? TileKind::Empty : t == TileKind::Empty ? TileKind::Full : TileKind::Partial;
  }
};

// The same predicate with tile classification switched off (every tile
// Partial): the "visit every tile, check every element" strategy, for
// benchmarks that measure what tile skipping buys.
template <class A>
struct UntiledMask : MaskBase<UntiledMask<A>> {
  A a;
  UntiledMask() = default;
  ATTNKIT_HD explicit UntiledMask(const A& x) : a(x) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return a(s, i, j); }
  ATTNKIT_HDI TileKind classify(const SeqCtx&, int64_t, int64_t, int64_t, int64_t) const { return TileKind::Partial; }
};
template <class A>
ATTNKIT_HD UntiledMask<A> untiled(const A& a) {
  return UntiledMask<A>(a);
}

template <class A, class B, class = std::enable_if_t<is_mask<A>::value && is_mask<B>::value>>
ATTNKIT_HD AndMask<A, B> operator&(const A& a, const B& b) {
  return AndMask<A, B>(a, b);
}
template <class A, class B, class = std::enable_if_t<is_mask<A>::value && is_mask<B>::value>>
ATTNKIT_HD OrMask<A, B> operator|(const A& a, const B& b) {
  return OrMask<A, B>(a, b);
}
template <class A, class = std::enable_if_t<is_mask<A>::value>>
ATTNKIT_HD NotMask<A> operator~(const A& a) {
  return NotMask<A>(a);
}

}  // namespace attnkit
