// Storage dtypes. Accumulation is always float; fp16 and bf16 are storage
// formats converted on load. The conversions are plain bit manipulation so
// they compile identically on host and device (CUDA code reinterprets these
// 16-bit structs as __half / __nv_bfloat16 for tensor-core instructions).
#pragma once

#include <cstdint>
#include <cstring>

#include "attnkit/core/macros.hpp"

namespace attnkit {

enum class DType { f32, f16, bf16 };

namespace detail {
ATTNKIT_HDI uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
ATTNKIT_HDI float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
}  // namespace detail

// IEEE binary16.
struct half {
  uint16_t bits = 0;
  half() = default;
  ATTNKIT_HD explicit half(float f) : bits(from_float(f)) {}
  ATTNKIT_HD explicit operator float() const { return to_float(bits); }

  ATTNKIT_HD static half from_bits(uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }

  // Round to nearest even, with overflow to inf and gradual underflow.
  ATTNKIT_HD static uint16_t from_float(float f) {
    uint32_t x = detail::float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) {  // inf or nan
      return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    }
    if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (absx < 0x38800000u) {                                               // subnormal half
      // Scale into the subnormal range with float arithmetic: 2^-24 ulp.
      float af = detail::bits_float(absx);
      float scaled = af * 16777216.0f;  // 2^24
      // round half to even
      uint32_t r = static_cast<uint32_t>(scaled);
      float frac = scaled - static_cast<float>(r);
      if (frac > 0.5f || (frac == 0.5f && (r & 1u))) ++r;
      return static_cast<uint16_t>(sign | r);
    }
    uint32_t mant = absx & 0x7fffffu;
    uint32_t exp = (absx >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: fine
    return static_cast<uint16_t>(sign | h);
  }

  ATTNKIT_HD static float to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
      float v = static_cast<float>(mant) * 5.9604644775390625e-08f;  // 2^-24
      return sign ? -v : v;
    }
    if (exp == 31) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
    return detail::bits_float(sign | ((exp - 15 + 127) << 23) | (mant << 13));
  }
};

// bfloat16: the top half of a float, rounded to nearest even.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  ATTNKIT_HD explicit bfloat16(float f) : bits(from_float(f)) {}
  ATTNKIT_HD explicit operator float() const { return to_float(bits); }

  ATTNKIT_HD static bfloat16 from_bits(uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  ATTNKIT_HD static uint16_t from_float(float f) {
    uint32_t x = detail::float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return static_cast<uint16_t>(x >> 16);
  }
  ATTNKIT_HD static float to_float(uint16_t b) { return detail::bits_float(static_cast<uint32_t>(b) << 16); }
};

// Uniform conversions used by kernels and tests.
ATTNKIT_HDI float to_float(float x) { return x; }
ATTNKIT_HDI float to_float(half x) { return half::to_float(x.bits); }
ATTNKIT_HDI float to_float(bfloat16 x) { return bfloat16::to_float(x.bits); }

template <class T>
ATTNKIT_HDI T from_float(float x) {
  return T(x);
}

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
  static constexpr const char* name = "f32";
};
template <>
struct dtype_of<half> {
  static constexpr DType value = DType::f16;
  static constexpr const char* name = "f16";
};
template <>
struct dtype_of<bfloat16> {
  static constexpr DType value = DType::bf16;
  static constexpr const char* name = "bf16";
};

}  // namespace attnkit
