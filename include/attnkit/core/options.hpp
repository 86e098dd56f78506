// What a caller can ask of one attention call besides q, k, v, out and the mask.
#pragma once

#include <cstdint>
#include <optional>

#include "attnkit/core/sequence.hpp"

namespace attnkit {

struct RopeConfig;  // attnkit/rope/config.hpp

struct AttentionOptions {
  // Softmax scale; default 1/sqrt(D).
  std::optional<float> scale;
  Alignment alignment = Alignment::BottomRight;

  // Optional output: natural-log sum of exp(logits) over the allowed keys.
  // Padded layout: [B, Hq, Sq] contiguous. Varlen: [Hq, total_q] contiguous
  // (FlashAttention's convention). -inf for rows with no allowed key.
  float* lse = nullptr;

  // Padded layout only: valid lengths per batch entry (right padding). Null
  // means every sequence is full length. Padded query rows output 0.
  const int32_t* q_lens = nullptr;
  const int32_t* kv_lens = nullptr;

  // Gemma-2 logit soft-capping: logit = softcap * tanh(scale * q.k / softcap). 0 = off.
  float softcap = 0.0f;
  // ALiBi (BLOOM, MPT): logit += slope[h] * (j - p(i)), i.e. -slope * distance. [Hq] or null.
  const float* alibi_slopes = nullptr;
  // gpt-oss attention sink: an extra logit per query head that joins the
  // softmax denominator only. [Hq] or null. The returned LSE does not include
  // it (so partial results still merge exactly); out is normalised with it.
  const float* sink_logits = nullptr;

  // Fused rotary embedding of q and k (null = none). See attnkit/rope/.
  const RopeConfig* rope = nullptr;
  // Explicit token positions for RoPE (left padding, packed sequences,
  // speculative decoding). Padded: [B, Sq] / [B, Sk]; varlen: [total_q] /
  // [total_k]. Null = positions from the alignment rule (DESIGN §2).
  const int64_t* q_positions = nullptr;
  const int64_t* kv_positions = nullptr;

  // CPU: threads to use (0 = OpenMP's default; 1 = serial). Results are
  // bit-identical whatever the count.
  int num_threads = 0;

  // CUDA: the stream to launch on (a cudaStream_t; null = the default stream).
  void* cuda_stream = nullptr;
};

// Packed variable-length batches (FlashAttention's varlen): sequence b owns
// rows [cu_seqlens[b], cu_seqlens[b+1]) of the [total, H, D] tensors.
struct VarlenSeqs {
  const int32_t* cu_seqlens_q = nullptr;  // [B + 1]
  const int32_t* cu_seqlens_k = nullptr;  // [B + 1]
  int64_t batch = 0;
  int64_t max_seqlen_q = 0;  // 0 = computed from cu_seqlens
  int64_t max_seqlen_k = 0;
};

}  // namespace attnkit
