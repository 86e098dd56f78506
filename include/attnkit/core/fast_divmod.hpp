// Division by a divisor fixed before a kernel launch, as a multiply-high and
// a shift: the GQA row packing divides row indices by the group size at every
// CTA's start and in its epilogue, where a 32-bit integer division (~25
// dependent instructions) sits on the critical path of a decode call.
//
// Round-up method (Granlund and Montgomery; CUTLASS's FastDivmod is alike):
// with l = ceil(log2 d) and m = ceil(2^(31 + l) / d) < 2^32, n / d equals
// (n * m) >> (31 + l) for every 0 <= n < 2^31.
#pragma once

#include <cstdint>

#include "attnkit/core/error.hpp"
#include "attnkit/core/macros.hpp"

namespace attnkit {

struct FastDivmod {
  int32_t divisor = 1;
  uint32_t multiplier = 0;  // 0: divisor 1
  int32_t shift = 0;        // 31 + l - 32

  FastDivmod() = default;
  explicit FastDivmod(int32_t d) : divisor(d) {
    detail::require(d >= 1, "divisor", d, "must be >= 1");
    if (d == 1) return;
    int32_t l = 0;
    while ((int64_t(1) << l) < d) ++l;
    multiplier = static_cast<uint32_t>(((uint64_t(1) << (31 + l)) + uint64_t(d) - 1) / uint64_t(d));
    shift = l - 1;
  }
  // n / divisor, for 0 <= n < 2^31.
  ATTNKIT_HDI int32_t div(int32_t n) const {
    if (multiplier == 0) return n;
#if defined(__CUDA_ARCH__)
    return static_cast<int32_t>(__umulhi(static_cast<uint32_t>(n), multiplier) >> shift);
#else
    return static_cast<int32_t>(((uint64_t(uint32_t(n)) * multiplier) >> 32) >> shift);
#endif
  }
  // n % divisor given q = n / divisor.
  ATTNKIT_HDI int32_t mod(int32_t n, int32_t q) const { return n - q * divisor; }
};

}  // namespace attnkit
