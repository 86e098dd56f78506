// Any user predicate as a mask. The functor is called as f(b, h, i, j), or as
// f(ctx, i, j) if it takes a SeqCtx (to use positions). Without a tile hint
// every tile is Partial: the kernel checks each element.
#pragma once

#include <type_traits>
#include <utility>

#include "attnkit/mask/tile.hpp"

namespace attnkit {

namespace detail {
template <class F, class = void>
struct takes_ctx : std::false_type {};
template <class F>
struct takes_ctx<F,
                 std::void_t<decltype(std::declval<const F&>()(std::declval<const SeqCtx&>(), int64_t{}, int64_t{}))>>
    : std::true_type {};

template <class F>
ATTNKIT_HDI bool call_predicate(const F& f, const SeqCtx& s, int64_t i, int64_t j) {
  if constexpr (takes_ctx<F>::value) {
    return static_cast<bool>(f(s, i, j));
  } else {
    return static_cast<bool>(f(s.batch, s.head, i, j));
  }
}
}  // namespace detail

template <class F>
struct CustomMask : MaskBase<CustomMask<F>> {
  F fn;
  CustomMask() = default;
  ATTNKIT_HD explicit CustomMask(F f) : fn(std::move(f)) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    return detail::call_predicate(fn, s, i, j);
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx&, int64_t, int64_t, int64_t, int64_t) const { return TileKind::Partial; }
};

// A predicate plus the user's own tile classifier G(ctx, i0, i1, j0, j1) -> TileKind.
template <class F, class G>
struct CustomTiledMask : MaskBase<CustomTiledMask<F, G>> {
  F fn;
  G tile_fn;
  CustomTiledMask() = default;
  ATTNKIT_HD CustomTiledMask(F f, G g) : fn(std::move(f)), tile_fn(std::move(g)) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    return detail::call_predicate(fn, s, i, j);
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    return tile_fn(s, i0, i1, j0, j1);
  }
};

template <class F>
CustomMask<F> custom_mask(F f) {
  return CustomMask<F>(std::move(f));
}
template <class F, class G>
CustomTiledMask<F, G> custom_mask(F f, G tile_classifier) {
  return CustomTiledMask<F, G>(std::move(f), std::move(tile_classifier));
}

}  // namespace attnkit
