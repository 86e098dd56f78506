// The few xsimd calls whose names changed after 8.1 (Debian 12 ships 8.1):
// horizontal max and sum. Everything else in attnkit uses the stable API.
//
// It is also the one place attnkit includes xsimd (and the x86 intrinsics):
// GCC 12 reports '__Y is used uninitialized' from inside avx512fintrin.h
// wherever those intrinsics get inlined (GCC bug 105593, a false positive),
// which would put hundreds of warnings into every user's -Wall build.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
