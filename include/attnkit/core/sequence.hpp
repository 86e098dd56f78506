// Per-sequence context that masks and position-dependent code see: which batch
// entry and query head, the valid lengths and the query position offset.
#pragma once

#include <cstdint>

#include "attnkit/core/macros.hpp"

namespace attnkit {

// Where queries sit relative to keys (DESIGN §2).
//  BottomRight: queries are the last Lq of Lk tokens, p(i) = i + (Lk - Lq).
//               The KV-cache case; FlashAttention >= 2.1; Hugging Face
//               past_key_values_length = Lk - Lq.
//  TopLeft:     p(i) = i (PyTorch's is_causal).
enum class Alignment { BottomRight, TopLeft };

struct SeqCtx {
  int64_t batch = 0;
  int64_t head = 0;      // query head
  int64_t q_len = 0;     // valid queries of this sequence
  int64_t kv_len = 0;    // valid keys of this sequence
  int64_t q_offset = 0;  // p(i) = i + q_offset

  ATTNKIT_HDI int64_t pos(int64_t i) const { return i + q_offset; }

  ATTNKIT_HD static SeqCtx make(int64_t b, int64_t h, int64_t lq, int64_t lk, Alignment a) {
    SeqCtx s;
    s.batch = b;
    s.head = h;
    s.q_len = lq;
    s.kv_len = lk;
    s.q_offset = a == Alignment::BottomRight ? lk - lq : 0;
    return s;
  }
};

}  // namespace attnkit
