// The normalised problem every kernel and the reference work on: padded BSHD
// and packed varlen layouts reduce to "sequence b starts at row r_b, has L_b
// rows, rows are row_stride apart, heads head_stride apart". Host/device POD.
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/core/macros.hpp"
#include "attnkit/core/sequence.hpp"

namespace attnkit {

// How one operand's tokens sit in memory.
struct SeqLayout {
  int64_t batch_stride = 0;  // padded layout only
  int64_t row_stride = 0;
  int64_t head_stride = 0;
};

struct ProblemShape {
  int64_t batch = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t q_capacity = 0;         // padded Sq, or varlen max_seqlen_q
  int64_t kv_capacity = 0;        // padded Sk, or varlen max_seqlen_k
  int64_t total_q = 0;            // varlen: rows of q
  int64_t total_k = 0;            // varlen: rows of k and v (0: unknown; bounds the GPU's TMA copies)
  const int32_t* cu_q = nullptr;  // varlen when non-null
  const int32_t* cu_k = nullptr;
  const int32_t* q_lens = nullptr;  // padded lengths, null = full
  const int32_t* kv_lens = nullptr;
  Alignment alignment = Alignment::BottomRight;

  ATTNKIT_HDI bool varlen() const { return cu_q != nullptr; }
  ATTNKIT_HDI int64_t group() const { return q_heads / kv_heads; }
  // GQA: query head h reads kv head h / group (Llama: 0..3 share kv head 0).
  ATTNKIT_HDI int64_t kv_head_of(int64_t h) const { return h / group(); }

  ATTNKIT_HDI int64_t q_len(int64_t b) const {
    return cu_q ? int64_t(cu_q[b + 1]) - cu_q[b] : (q_lens ? int64_t(q_lens[b]) : q_capacity);
  }
  ATTNKIT_HDI int64_t kv_len(int64_t b) const {
    return cu_k ? int64_t(cu_k[b + 1]) - cu_k[b] : (kv_lens ? int64_t(kv_lens[b]) : kv_capacity);
  }
  // First packed row of sequence b (0 for padded layouts).
  ATTNKIT_HDI int64_t q_start(int64_t b) const { return cu_q ? int64_t(cu_q[b]) : 0; }
  ATTNKIT_HDI int64_t kv_start(int64_t b) const { return cu_k ? int64_t(cu_k[b]) : 0; }

  ATTNKIT_HDI SeqCtx ctx(int64_t b, int64_t h) const { return SeqCtx::make(b, h, q_len(b), kv_len(b), alignment); }
};

template <class T>
struct AttentionParams {
  ProblemShape shape;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* out = nullptr;
  SeqLayout q_layout, k_layout, v_layout, o_layout;

  float* lse = nullptr;
  int64_t lse_batch_stride = 0;  // padded: Hq * Sq
  int64_t lse_head_stride = 0;   // padded: Sq; varlen: total_q

  float scale = 1.0f;
  float softcap = 0.0f;
  const float* alibi_slopes = nullptr;
  const float* sink_logits = nullptr;
  const int64_t* q_positions = nullptr;
  const int64_t* kv_positions = nullptr;
  int64_t q_pos_batch_stride = 0;  // padded: Sq
  int64_t kv_pos_batch_stride = 0;

  // Pointer to row i (within sequence b) of head h.
  template <class P>
  ATTNKIT_HDI static P* row(P* base, const SeqLayout& l, const ProblemShape& s, bool is_q, int64_t b, int64_t i,
                            int64_t h) {
    const int64_t start = is_q ? s.q_start(b) : s.kv_start(b);
    const int64_t off = (s.varlen() ? 0 : b * l.batch_stride) + (start + i) * l.row_stride + h * l.head_stride;
    return base + off;
  }
  ATTNKIT_HDI const T* q_row(int64_t b, int64_t i, int64_t h) const { return row(q, q_layout, shape, true, b, i, h); }
  ATTNKIT_HDI const T* k_row(int64_t b, int64_t j, int64_t hk) const {
    return row(k, k_layout, shape, false, b, j, hk);
  }
  ATTNKIT_HDI const T* v_row(int64_t b, int64_t j, int64_t hk) const {
    return row(v, v_layout, shape, false, b, j, hk);
  }
  ATTNKIT_HDI T* out_row(int64_t b, int64_t i, int64_t h) const { return row(out, o_layout, shape, true, b, i, h); }
  ATTNKIT_HDI float* lse_ptr(int64_t b, int64_t i, int64_t h) const {
    return lse + (shape.varlen() ? shape.q_start(b) : b * lse_batch_stride) + h * lse_head_stride + i;
  }

  // Token positions used by RoPE: explicit arrays when given, else the
  // alignment rule (keys at j, queries at p(i)).
  ATTNKIT_HDI int64_t q_position(int64_t b, int64_t i) const {
    if (q_positions) return q_positions[shape.varlen() ? shape.q_start(b) + i : b * q_pos_batch_stride + i];
    return shape.ctx(b, 0).pos(i);
  }
  ATTNKIT_HDI int64_t kv_position(int64_t b, int64_t j) const {
    if (kv_positions) return kv_positions[shape.varlen() ? shape.kv_start(b) + j : b * kv_pos_batch_stride + j];
    return j;
  }
};

}  // namespace attnkit
