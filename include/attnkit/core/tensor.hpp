// Strided tensor views. Every operand is a view with element strides, so BSHD,
// BHSD and slices of a fused QKV buffer all work without copies. The kernels
// need only the last dimension to be contiguous.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "attnkit/core/macros.hpp"

namespace attnkit {

template <class T, int Rank>
struct TensorView {
  static_assert(Rank >= 1 && Rank <= 4, "attnkit views have rank 1..4");
  using value_type = T;
  static constexpr int rank = Rank;

  T* data = nullptr;
  int64_t shape[Rank] = {};
  int64_t stride[Rank] = {};  // in elements

  TensorView() = default;

  // Row-major contiguous view over `shape`.
  ATTNKIT_HD TensorView(T* ptr, const int64_t (&shp)[Rank]) : data(ptr) {
    int64_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      shape[d] = shp[d];
      stride[d] = s;
      s *= shp[d];
    }
  }

  // Explicit strides (elements), e.g. a BHSD buffer viewed as BSHD.
  ATTNKIT_HD TensorView(T* ptr, const int64_t (&shp)[Rank], const int64_t (&strd)[Rank]) : data(ptr) {
    for (int d = 0; d < Rank; ++d) {
      shape[d] = shp[d];
      stride[d] = strd[d];
    }
  }

  // Implicit conversion to a view of const elements.
  template <class U, class = decltype(static_cast<const U*>(static_cast<T*>(nullptr)))>
  ATTNKIT_HD operator TensorView<const U, Rank>() const {
    TensorView<const U, Rank> v;
    v.data = data;
    for (int d = 0; d < Rank; ++d) {
      v.shape[d] = shape[d];
      v.stride[d] = stride[d];
    }
    return v;
  }

  ATTNKIT_HD int64_t size(int d) const { return shape[d]; }
  ATTNKIT_HD int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < Rank; ++d) n *= shape[d];
    return n;
  }

  template <class... I>
  ATTNKIT_HD int64_t offset(I... idx) const {
    static_assert(sizeof...(I) == Rank, "index count must equal rank");
    const int64_t ii[] = {static_cast<int64_t>(idx)...};
    int64_t off = 0;
    for (int d = 0; d < Rank; ++d) off += ii[d] * stride[d];
    return off;
  }
  template <class... I>
  ATTNKIT_HD T& operator()(I... idx) const {
    return data[offset(idx...)];
  }
};

template <class T>
using Tensor4 = TensorView<T, 4>;  // [B, S, H, D]
template <class T>
using Tensor3 = TensorView<T, 3>;  // varlen [total, H, D]

template <class T, int Rank>
ATTNKIT_HD TensorView<T, Rank> make_view(T* ptr, const int64_t (&shape)[Rank]) {
  return TensorView<T, Rank>(ptr, shape);
}
template <class T, int Rank>
ATTNKIT_HD TensorView<T, Rank> make_view(T* ptr, const int64_t (&shape)[Rank], const int64_t (&stride)[Rank]) {
  return TensorView<T, Rank>(ptr, shape, stride);
}

}  // namespace attnkit
