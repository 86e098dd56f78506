// fp16 / bf16 storage conversions. The oracles here are written from the IEEE
// definitions (value of a bit pattern via ldexp, nearest representable value
// by search, ties to even), not from bit tricks like the library's, and where
// the compiler has _Float16 its conversion is a second, independent oracle.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "support/test_util.hpp"

namespace {

using namespace attnkit;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Value of a binary16 pattern from the definition. Exponent 31 is returned as
// if it were finite (2^16 * (1 + m/1024)), which is what rounding needs for
// "the next value above the largest finite"; callers handle inf/nan first.
double half_value(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(static_cast<double>(m), -24) : std::ldexp(1024.0 + m, e - 25);
  return sign ? -mag : mag;
}
bool half_is_nan(uint16_t h) { return ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0; }
bool half_is_inf(uint16_t h) { return (h & 0x7fff) == 0x7c00; }

// bfloat16 likewise: 8 exponent bits, 7 mantissa bits.
double bf16_value(uint16_t b) {
  const int sign = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
  const double mag = e == 0 ? std::ldexp(static_cast<double>(m), -133) : std::ldexp(128.0 + m, e - 134);
  return sign ? -mag : mag;
}

// Round-to-nearest-even by search over the magnitudes [0, limit] (limit =
// the pattern just past the largest finite, i.e. infinity's), which are
// monotonic in their bit patterns.
template <class Value>
uint16_t nearest_even(float f, uint16_t limit, Value value) {
  const double x = std::abs(static_cast<double>(f));
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  // Largest pattern with value <= x.
  uint16_t lo = 0, hi = limit;
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (value(mid) <= x)
      lo = mid;
    else
      hi = static_cast<uint16_t>(mid - 1);
  }
  uint16_t r = lo;
  if (lo < limit) {
    const double below = x - value(lo), above = value(static_cast<uint16_t>(lo + 1)) - x;
    if (above < below || (above == below && (lo & 1))) r = static_cast<uint16_t>(lo + 1);
  }
  return static_cast<uint16_t>(sign | r);
}
uint16_t half_oracle(float f) { return nearest_even(f, 0x7c00, half_value); }
uint16_t bf16_oracle(float f) { return nearest_even(f, 0x7f80, bf16_value); }

// Floats that stress rounding: every midpoint between neighbouring patterns
// and one float-ulp either side of it, plus random floats over every binade.
template <class Value>
std::vector<float> rounding_probes(uint16_t limit, Value value, std::mt19937_64& rng, int random_count) {
  std::vector<float> probes;
  for (uint32_t h = 0; h < limit; ++h) {
    const double mid = 0.5 * (value(static_cast<uint16_t>(h)) + value(static_cast<uint16_t>(h + 1)));
    const float m = static_cast<float>(mid);  // exact: a midpoint needs one bit more than the format
    for (float f : {m, std::nextafter(m, 0.0f), std::nextafter(m, std::numeric_limits<float>::infinity())}) {
      probes.push_back(f);
      probes.push_back(-f);
    }
  }
  std::uniform_int_distribution<uint32_t> any;
  for (int n = 0; n < random_count; ++n) {
    const float f = float_of(any(rng));
    if (!std::isnan(f)) probes.push_back(f);
  }
  return probes;
}

}  // namespace

TEST_CASE("dtype: every half pattern converts to its exact value and back", "[dtype]") {
  int64_t bad_value = 0, bad_round_trip = 0, nans = 0;
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t h = static_cast<uint16_t>(u);
    const float f = half::to_float(h);
    if (half_is_nan(h)) {
      ++nans;
      bad_value += !std::isnan(f);
      const uint16_t back = half::from_float(f);
      bad_round_trip += !half_is_nan(back) || (back & 0x8000) != (h & 0x8000);
      continue;
    }
    if (half_is_inf(h))
      bad_value += !(std::isinf(f) && std::signbit(f) == bool(h & 0x8000));
    else
      bad_value += static_cast<double>(f) != half_value(h) || std::signbit(f) != bool(h & 0x8000);
    bad_round_trip += half::from_float(f) != h;  // includes -0, subnormals, +-inf
    bad_round_trip += half(f).bits != h;
    bad_round_trip += to_float(from_float<half>(f)) != f;
  }
  CHECK(nans == 2 * 1023);
  CHECK(bad_value == 0);
  CHECK(bad_round_trip == 0);
}

TEST_CASE("dtype: float -> half rounds to nearest even, with subnormals and overflow", "[dtype]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const auto probes = rounding_probes(0x7c00, half_value, rng, 200000);
  int64_t bad = 0, bad_f16 = 0;
  float first_bad = 0.0f;
  for (float f : probes) {
    const uint16_t got = half::from_float(f);
    if (got != half_oracle(f)) {
      if (bad++ == 0) first_bad = f;
    }
#if defined(__FLT16_MAX__)
    const _Float16 c = static_cast<_Float16>(f);
    uint16_t cb;
    std::memcpy(&cb, &c, 2);
    bad_f16 += got != cb;
#endif
  }
  INFO("first mismatch at " << first_bad << " (bits 0x" << std::hex << bits_of(first_bad) << ")");
  CHECK(bad == 0);
  CHECK(bad_f16 == 0);

  // Hand-picked cases around the ends of the range.
  CHECK(half::from_float(std::ldexp(1.0f, -24)) == 0x0001);         // smallest subnormal
  CHECK(half::from_float(std::ldexp(1.0f, -25)) == 0x0000);         // tie -> even (0)
  CHECK(half::from_float(std::ldexp(3.0f, -25)) == 0x0002);         // tie 1|2 -> even (2)
  CHECK(half::from_float(std::ldexp(1.0f, -26)) == 0x0000);         // below half an ulp
  CHECK(half::from_float(std::ldexp(1023.0f, -24)) == 0x03ff);      // largest subnormal
  CHECK(half::from_float(std::ldexp(1.0f, -14)) == 0x0400);         // smallest normal
  CHECK(half::from_float(std::ldexp(2047.0f, -25)) == 0x0400);      // subnormal rounding up into normal
  CHECK(half::from_float(65504.0f) == 0x7bff);                      // largest finite
  CHECK(half::from_float(65519.996f) == 0x7bff);                    // just below the overflow tie
  CHECK(half::from_float(65520.0f) == 0x7c00);                      // overflow tie -> inf
  CHECK(half::from_float(-1e30f) == 0xfc00);                        // overflow to -inf
  CHECK(half::from_float(-0.0f) == 0x8000);                         // sign of zero kept
  CHECK(half::from_float(-std::ldexp(1.0f, -30)) == 0x8000);        // underflow to -0
  CHECK(half::from_float(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even (1.0)
  CHECK(half::from_float(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);  // tie -> even (up)
  CHECK(half::from_float(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(half_is_nan(half::from_float(std::numeric_limits<float>::quiet_NaN())));
  CHECK(half_is_nan(half::from_float(float_of(0x7f800001u))));  // signalling NaN stays a NaN
}

TEST_CASE("dtype: every bfloat16 pattern converts exactly and back", "[dtype]") {
  int64_t bad = 0;
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t b = static_cast<uint16_t>(u);
    const float f = bfloat16::to_float(b);
    bad += bits_of(f) != (u << 16);
    const bool nan = ((b >> 7) & 0xff) == 0xff && (b & 0x7f) != 0;
    if (nan) {
      bad += !std::isnan(bfloat16::to_float(bfloat16::from_float(f)));
    } else {
      bad += bfloat16::from_float(f) != b;
      bad += from_float<bfloat16>(f).bits != b;
      bad += to_float(bfloat16::from_bits(b)) != f && !std::isnan(f);
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("dtype: float -> bfloat16 rounds to nearest even", "[dtype]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const auto probes = rounding_probes(0x7f80, bf16_value, rng, 200000);
  int64_t bad = 0;
  float first_bad = 0.0f;
  for (float f : probes)
    if (bfloat16::from_float(f) != bf16_oracle(f) && bad++ == 0) first_bad = f;
  INFO("first mismatch at " << first_bad << " (bits 0x" << std::hex << bits_of(first_bad) << ")");
  CHECK(bad == 0);
  CHECK(bfloat16::from_float(float_of(0x3f808000u)) == 0x3f80);  // tie -> even (down)
  CHECK(bfloat16::from_float(float_of(0x3f818000u)) == 0x3f82);  // tie -> even (up)
  CHECK(bfloat16::from_float(float_of(0x3f808001u)) == 0x3f81);  // above the tie
  CHECK(bfloat16::from_float(float_of(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to inf
  CHECK(bfloat16::from_float(float_of(0x00008000u)) == 0x0000);  // subnormal tie -> even
  CHECK(bfloat16::from_float(-0.0f) == 0x8000);
  CHECK(bfloat16::from_float(-std::numeric_limits<float>::infinity()) == 0xff80);
  const uint16_t n = bfloat16::from_float(float_of(0x7f800001u));  // payload only in the low bits
  CHECK(((n >> 7) & 0xff) == 0xff);
  CHECK((n & 0x7f) != 0);  // still a NaN, not turned into inf
}

TEST_CASE("dtype: random vectors through the generic helpers", "[dtype]") {
  const uint64_t seed = attnkit_test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-100.0f, 100.0f);
  for (int n = 0; n < 10000; ++n) {
    const float f = u(rng);
    // |error| <= half an ulp of the format at f.
    const float h = to_float(from_float<half>(f)), b = to_float(from_float<bfloat16>(f));
    const int e = std::ilogb(f);
    CHECK(std::abs(h - f) <= std::ldexp(1.0f, std::max(e, -14) - 11));
    CHECK(std::abs(b - f) <= std::ldexp(1.0f, e - 8));
    CHECK(to_float(f) == f);
  }
  CHECK(dtype_of<half>::value == DType::f16);
  CHECK(dtype_of<bfloat16>::value == DType::bf16);
  CHECK(dtype_of<float>::value == DType::f32);
}
