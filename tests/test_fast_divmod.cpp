// FastDivmod against the / and % operators: every divisor up to 4096 on
// random dividends and on the edges (0, multiples of the divisor and their
// neighbours, 2^31 - 1), and random divisors up to 2^31 - 1.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>

#include "attnkit/core/fast_divmod.hpp"

using attnkit::FastDivmod;

namespace {
int32_t first_mismatch(int32_t d, std::mt19937_64& rng) {
  const FastDivmod f(d);
  auto wrong = [&](int64_t n) {
    if (n < 0 || n > INT32_MAX) return false;
    const int32_t m = static_cast<int32_t>(n), q = f.div(m);
    return q != m / d || f.mod(m, q) != m % d;
  };
  const int64_t dd = d;  // 64-bit edges: d + 1 overflows an int32_t at d = 2^31 - 1
  const int64_t edges[] = {0,
                           1,
                           dd - 1,
                           dd,
                           dd + 1,
                           2 * dd - 1,
                           2 * dd,
                           INT32_MAX,
                           INT32_MAX - 1,
                           INT32_MAX - INT32_MAX % dd,
                           INT32_MAX - INT32_MAX % dd - 1};
  for (int64_t n : edges)
    if (wrong(n)) return static_cast<int32_t>(n);
  std::uniform_int_distribution<int32_t> any(0, INT32_MAX);
  for (int k = 0; k < 200; ++k) {
    const int32_t n = any(rng);
    // A random dividend and the multiple of d at or below it, with neighbours.
    for (int64_t c : {int64_t(n), int64_t(n) - n % d, int64_t(n) - n % d - 1, int64_t(n) - n % d + d - 1})
      if (wrong(c)) return static_cast<int32_t>(c);
  }
  return -1;
}
}  // namespace

TEST_CASE("fast divmod matches integer division", "[fast_divmod]") {
  std::mt19937_64 rng(std::random_device{}());
  for (int32_t d = 1; d <= 4096; ++d) {
    INFO("divisor " << d);
    REQUIRE(first_mismatch(d, rng) == -1);
  }
  std::uniform_int_distribution<int32_t> big(4097, INT32_MAX);
  for (int k = 0; k < 2000; ++k) {
    const int32_t d = big(rng);
    INFO("divisor " << d);
    REQUIRE(first_mismatch(d, rng) == -1);
  }
  for (int32_t d : {INT32_MAX, INT32_MAX - 1, 1 << 30, (1 << 30) + 1, 65535, 65536, 65537}) {
    INFO("divisor " << d);
    REQUIRE(first_mismatch(d, rng) == -1);
  }
}

TEST_CASE("fast divmod rejects a divisor below 1", "[fast_divmod]") {
  CHECK_THROWS_AS(FastDivmod(0), attnkit::Error);
  CHECK_THROWS_AS(FastDivmod(-3), attnkit::Error);
}
