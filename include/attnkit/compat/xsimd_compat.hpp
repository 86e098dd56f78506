// The few xsimd calls whose names changed after 8.1 (Debian 12 ships 8.1):
// horizontal max and sum. Everything else in attnkit uses the stable API.
#pragma once

#include <xsimd/xsimd.hpp>

#if defined(XSIMD_VERSION_MAJOR) && XSIMD_VERSION_MAJOR >= 9
#define ATTNKIT_XSIMD_HAS_REDUCE 1
#else
#define ATTNKIT_XSIMD_HAS_REDUCE 0
#endif

namespace attnkit {
namespace simd {

template <class T, class A>
inline T reduce_add(const xsimd::batch<T, A>& x) {
#if ATTNKIT_XSIMD_HAS_REDUCE
  return xsimd::reduce_add(x);
#else
  return xsimd::hadd(x);
#endif
}

template <class T, class A>
inline T reduce_max(const xsimd::batch<T, A>& x) {
#if ATTNKIT_XSIMD_HAS_REDUCE
  return xsimd::reduce_max(x);
#else
  alignas(64) T buf[xsimd::batch<T, A>::size];
  x.store_aligned(buf);
  T m = buf[0];
  for (std::size_t n = 1; n < xsimd::batch<T, A>::size; ++n) m = buf[n] > m ? buf[n] : m;
  return m;
#endif
}

}  // namespace simd
}  // namespace attnkit
