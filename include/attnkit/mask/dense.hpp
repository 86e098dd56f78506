// Dense builders: materialise any mask as a boolean matrix or an additive
// float matrix (0 allowed, -inf masked), for interop with code that expects
// Hugging Face-style masks and for tests. These are O(Sq * Sk) by design;
// kernels never call them.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/error.hpp"
#include "attnkit/core/sequence.hpp"
#include "attnkit/mask/tile.hpp"

namespace attnkit {

// [B, 1, Sq, Sk] row-major, 1 = allowed. Batch b has Lq = q_lens[b] valid
// queries and Lk = kv_lens[b] valid keys (null = all); positions and
// alignment follow those actual lengths, rows/columns past them are masked.
template <class Mask>
std::vector<uint8_t> dense_mask_bool(const Mask& mask, int64_t B, int64_t Sq, int64_t Sk, const int32_t* q_lens,
                                     const int32_t* kv_lens, Alignment align = Alignment::BottomRight,
                                     int64_t head = 0) {
  detail::require(B >= 0, "B", B, "must be >= 0");
  detail::require(Sq >= 0, "Sq", Sq, "must be >= 0");
  detail::require(Sk >= 0, "Sk", Sk, "must be >= 0");
  std::vector<uint8_t> m(static_cast<size_t>(B * Sq * Sk), 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lq = q_lens ? q_lens[b] : Sq, lk = kv_lens ? kv_lens[b] : Sk;
    if (lq < 0 || lq > Sq)
      detail::fail_arg(detail::concat("q_lens[", b, "]").c_str(), lq, detail::concat("must be in [0, ", Sq, "]"));
    if (lk < 0 || lk > Sk)
      detail::fail_arg(detail::concat("kv_lens[", b, "]").c_str(), lk, detail::concat("must be in [0, ", Sk, "]"));
    const SeqCtx s = SeqCtx::make(b, head, lq, lk, align);
    for (int64_t i = 0; i < lq; ++i)
      for (int64_t j = 0; j < lk; ++j) m[static_cast<size_t>((b * Sq + i) * Sk + j)] = mask(s, i, j) ? 1 : 0;
  }
  return m;
}

// [Sq, Sk] for one sequence with every row and column valid.
template <class Mask>
std::vector<uint8_t> dense_mask_bool(const Mask& mask, int64_t Sq, int64_t Sk,
                                     Alignment align = Alignment::BottomRight) {
  return dense_mask_bool(mask, 1, Sq, Sk, nullptr, nullptr, align);
}

// Additive form: 0 where allowed, -inf where masked.
inline std::vector<float> to_additive(const std::vector<uint8_t>& allowed) {
  std::vector<float> out(allowed.size());
  for (size_t n = 0; n < allowed.size(); ++n) out[n] = allowed[n] ? 0.0f : -std::numeric_limits<float>::infinity();
  return out;
}

template <class Mask>
std::vector<float> dense_mask_additive(const Mask& mask, int64_t B, int64_t Sq, int64_t Sk, const int32_t* q_lens,
                                       const int32_t* kv_lens, Alignment align = Alignment::BottomRight,
                                       int64_t head = 0) {
  return to_additive(dense_mask_bool(mask, B, Sq, Sk, q_lens, kv_lens, align, head));
}
template <class Mask>
std::vector<float> dense_mask_additive(const Mask& mask, int64_t Sq, int64_t Sk,
                                       Alignment align = Alignment::BottomRight) {
  return to_additive(dense_mask_bool(mask, Sq, Sk, align));
}

// A materialised mask used as a functor again: allowed(i, j) = map[i * Sk + j]
// (per batch: + b * batch_stride). Lets kernels run "dense mask" strategies for
// comparison with the functor masks; every tile is Partial.
struct DenseMask : MaskBase<DenseMask> {
  const uint8_t* allowed = nullptr;
  int64_t row_stride = 0;    // usually Sk
  int64_t batch_stride = 0;  // usually Sq * Sk
  DenseMask() = default;
  ATTNKIT_HD DenseMask(const uint8_t* a, int64_t rs, int64_t bs = 0) : allowed(a), row_stride(rs), batch_stride(bs) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    return allowed[s.batch * batch_stride + i * row_stride + j] != 0;
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx&, int64_t, int64_t, int64_t, int64_t) const { return TileKind::Partial; }
};

// Additive float mask (0 / -inf, or any bias) applied to the logits: the
// "materialised dense additive mask" strategy. -inf entries are treated as
// masked (a predicate), so no -inf + x arithmetic happens.
struct AdditiveMask : MaskBase<AdditiveMask> {
  const float* bias = nullptr;
  int64_t row_stride = 0;
  int64_t batch_stride = 0;
  AdditiveMask() = default;
  ATTNKIT_HD AdditiveMask(const float* b, int64_t rs, int64_t bs = 0) : bias(b), row_stride(rs), batch_stride(bs) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    return bias[s.batch * batch_stride + i * row_stride + j] > -3.0e38f;
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx&, int64_t, int64_t, int64_t, int64_t) const { return TileKind::Partial; }
};

}  // namespace attnkit
