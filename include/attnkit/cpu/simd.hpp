// SIMD vocabulary of the CPU kernels: the batch types by lane count (chosen at
// compile time from the target flags, via xsimd), register budget, fast exp2
// and dtype conversion of rows.
#pragma once

#include <cstdint>
#include <cstring>

#include "attnkit/compat/xsimd_compat.hpp"
#include "attnkit/core/dtype.hpp"

namespace attnkit {
namespace cpu {

// The widest float batch of the target (16 lanes with AVX-512, 8 with AVX2,
// 4 with NEON/SSE).
using WideBatch = xsimd::batch<float>;

// Narrower batches with FMA for small row counts (decode: 4 query heads of a
// GQA group are 4 lanes; using 16 would waste 3/4 of the arithmetic).
#if XSIMD_WITH_FMA3_AVX2
using Batch8 = xsimd::batch<float, xsimd::fma3<xsimd::avx2>>;
#else
using Batch8 = WideBatch;
#endif
// xsimd enables its FMA-SSE architecture only without AVX, so on AVX2 /
// AVX-512 machines 4-lane batches are plain sse4_2 and fmadd() below supplies
// the fused multiply-add.
#if XSIMD_WITH_FMA3_SSE
using Batch4 = xsimd::batch<float, xsimd::fma3<xsimd::sse4_2>>;
#elif XSIMD_WITH_SSE4_2 && defined(__FMA__)
using Batch4 = xsimd::batch<float, xsimd::sse4_2>;
#else
using Batch4 = WideBatch;
#endif

// a * b + c, fused. The micro-kernels call this rather than xsimd::fma so
// that every batch type gets a real FMA instruction.
template <class B>
ATTNKIT_FORCEINLINE B fmadd(const B& a, const B& b, const B& c) {
  return xsimd::fma(a, b, c);
}
#if !XSIMD_WITH_FMA3_SSE && XSIMD_WITH_SSE4_2 && defined(__FMA__)
ATTNKIT_FORCEINLINE xsimd::batch<float, xsimd::sse4_2> fmadd(const xsimd::batch<float, xsimd::sse4_2>& a,
                                                             const xsimd::batch<float, xsimd::sse4_2>& b,
                                                             const xsimd::batch<float, xsimd::sse4_2>& c) {
  return _mm_fmadd_ps(a, b, c);
}
#endif

// Architectural vector registers: AVX-512 (and its VL encodings of xmm/ymm)
// and AArch64 have 32; AVX2 has 16. Micro-kernel blocking is sized from it.
#if XSIMD_WITH_AVX512F || XSIMD_WITH_NEON64
inline constexpr int kVectorRegisters = 32;
#else
inline constexpr int kVectorRegisters = 16;
#endif

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// 2^x for float batches. Round-to-nearest split x = n + f, f in [-1/2, 1/2],
// degree-7 Taylor polynomial of 2^f (truncation < 6e-9 relative), scaled by
// 2^n through the exponent bits. Measured maximum relative error against
// std::exp2 in double: see tests/test_cpu_kernel.cpp ("fast exp2"), < 4e-7
// (a few float ulp). Inputs below -126 (incl. -inf) give exactly 0, which
// the online softmax relies on for masked scores.
template <class B>
ATTNKIT_FORCEINLINE B exp2_fast(B x) {
  using I = xsimd::batch<int32_t, typename B::arch_type>;
  const auto underflow = x < B(-126.0f);
  x = xsimd::max(x, B(-126.0f));
  x = xsimd::min(x, B(127.0f));
  const B n = xsimd::nearbyint(x);
  const B f = x - n;
  B p(1.5252733804059840e-05f);  // ln2^7 / 7!
  p = fmadd(p, f, B(1.5403530393381609e-04f));
  p = fmadd(p, f, B(1.3333558146428443e-03f));
  p = fmadd(p, f, B(9.6181291076284772e-03f));
  p = fmadd(p, f, B(5.5504108664821580e-02f));
  p = fmadd(p, f, B(2.4022650695910071e-01f));
  p = fmadd(p, f, B(6.9314718055994531e-01f));
  p = fmadd(p, f, B(1.0f));
  const I e = (xsimd::batch_cast<int32_t>(n) + I(127)) << 23;
  const B scale = xsimd::bitwise_cast<B>(e);
  return xsimd::select(underflow, B(0.0f), p * scale);
}

// Rows of storage dtype -> float (vectorised where the ISA has it).
inline void to_float_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, sizeof(float) * n); }

inline void to_float_row(const bfloat16* src, float* dst, int64_t n) {
  // bf16 is the top half of a float: widening is a shift, which compilers
  // vectorise from this loop.
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
#if defined(_OPENMP)
#pragma omp simd
#endif
  for (int64_t d = 0; d < n; ++d) {
    const uint32_t u = static_cast<uint32_t>(s[d]) << 16;
    std::memcpy(dst + d, &u, 4);
  }
}

inline void to_float_row(const half* src, float* dst, int64_t n) {
  int64_t d = 0;
#if defined(__AVX512F__)
  for (; d + 16 <= n; d += 16)
    _mm512_storeu_ps(dst + d, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + d))));
#elif defined(__F16C__)
  for (; d + 8 <= n; d += 8)
    _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
#endif
  for (; d < n; ++d) dst[d] = half::to_float(src[d].bits);
}

template <class T>
inline void from_float_row(const float* src, T* dst, int64_t n) {
  for (int64_t d = 0; d < n; ++d) dst[d] = from_float<T>(src[d]);
}
inline void from_float_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, sizeof(float) * n); }

}  // namespace cpu
}  // namespace attnkit
