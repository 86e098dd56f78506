// Mean-pooled keys per (sequence, KV head, block of block_size keys): the
// "experts" MoBA's gate scores against (DESIGN §5). Computed once with fp32
// accumulation and kept across calls: a growing KV cache (decode) only
// extends the sequences, which touches the last, partial block's mean and
// the new blocks after it; every other mean stays as it was.
//
// Incremental updates are bit-identical to recomputing from scratch: each
// block keeps its fp32 key sum, and appending keys continues that sum in the
// same order a fresh computation would use (0 + k_j0 + k_j0+1 + ...).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/macros.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/cpu/threading.hpp"

namespace attnkit {

// Read-only view of the block means for kernels, host or device: a POD.
// Layout: feature-major per (sequence, kv head), mean[d * stride + c], so a
// gate computes q . mean for many blocks with contiguous vector loads.
// Entries past a sequence's last block are 0.
struct MobaMeansView {
  const float* mean = nullptr;      // [batch][kv_heads][head_dim][stride]
  const int64_t* tokens = nullptr;  // [batch] keys pooled per sequence
  int64_t batch = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 1;
  int64_t stride = 0;  // >= blocks of the longest sequence, a multiple of 16

  ATTNKIT_HDI const float* of(int64_t b, int64_t h) const { return mean + (b * kv_heads + h) * head_dim * stride; }
  ATTNKIT_HDI float at(int64_t b, int64_t h, int64_t c, int64_t d) const { return of(b, h)[d * stride + c]; }
  ATTNKIT_HDI int64_t blocks(int64_t b) const { return (tokens[b] + block_size - 1) / block_size; }
};

class MobaBlockMeans {
 public:
  MobaBlockMeans() = default;

  // Empty means (0 tokens per sequence) for `batch` sequences of `kv_heads`
  // heads of dimension `head_dim`. `capacity_tokens` reserves room (it grows
  // on demand anyway).
  MobaBlockMeans(int64_t batch, int64_t kv_heads, int64_t head_dim, int64_t block_size, int64_t capacity_tokens = 0) {
    detail::require(batch >= 0, "batch", batch, "must be >= 0");
    detail::require(kv_heads >= 1, "num_kv_heads", kv_heads, "must be >= 1");
    detail::require(head_dim >= 1, "head_dim", head_dim, "must be >= 1");
    detail::require(block_size >= 1, "moba block_size", block_size, "must be >= 1");
    detail::require(capacity_tokens >= 0, "capacity_tokens", capacity_tokens, "must be >= 0");
    batch_ = batch;
    heads_ = kv_heads;
    dim_ = head_dim;
    bs_ = block_size;
    tokens_.assign(static_cast<size_t>(batch), 0);
    grow((capacity_tokens + bs_ - 1) / bs_);
  }

  int64_t batch() const { return batch_; }
  int64_t kv_heads() const { return heads_; }
  int64_t head_dim() const { return dim_; }
  int64_t block_size() const { return bs_; }
  int64_t tokens(int64_t b) const { return tokens_[static_cast<size_t>(b)]; }
  int64_t blocks(int64_t b) const { return (tokens(b) + bs_ - 1) / bs_; }
  // Mean of dimension d of keys [c * Bs, min((c + 1) * Bs, tokens(b))) of kv head h.
  float mean(int64_t b, int64_t h, int64_t c, int64_t d) const { return view().at(b, h, c, d); }

  MobaMeansView view() const {
    MobaMeansView v;
    v.mean = mean_.data();
    v.tokens = tokens_.data();
    v.batch = batch_;
    v.kv_heads = heads_;
    v.head_dim = dim_;
    v.block_size = bs_;
    v.stride = stride_;
    return v;
  }

  // Forget every pooled key (a new batch of sequences in the same buffers).
  void reset() {
    std::fill(tokens_.begin(), tokens_.end(), 0);
    std::fill(mean_.begin(), mean_.end(), 0.0f);
    std::fill(sum_.begin(), sum_.end(), 0.0f);
  }

  // Padded KV cache k [B, S, Hkv, D] (any strides, last contiguous): brings
  // sequence b up to kv_lens[b] keys (S when kv_lens is null). Keys already
  // pooled are not read again; lengths may only grow (reset() to start over).
  template <class T>
  void update(const Tensor4<T>& k, const int32_t* kv_lens = nullptr, int num_threads = 0) {
    check_view(k, k.shape[2], k.shape[3]);
    detail::require(k.shape[0] == batch_, "k.shape[0]", k.shape[0],
                    detail::concat("must equal the means' batch (", batch_, ")"));
    const int64_t S = k.shape[1];
    std::vector<int64_t> lens(static_cast<size_t>(batch_));
    for (int64_t b = 0; b < batch_; ++b) {
      const int64_t n = kv_lens ? kv_lens[b] : S;
      if (n < 0 || n > S)
        detail::fail_arg(detail::concat("kv_lens[", b, "]").c_str(), n, detail::concat("must be in [0, Sk = ", S, "]"));
      lens[static_cast<size_t>(b)] = n;
    }
    check_growth(lens);
    using E = std::remove_const_t<T>;
    const E* base = k.data;
    const int64_t s0 = k.stride[0], s1 = k.stride[1], s2 = k.stride[2];
    extend(lens, num_threads, [=](int64_t b, int64_t j, int64_t h) { return base + b * s0 + j * s1 + h * s2; });
  }

  // Packed keys k [total_k, Hkv, D]: sequence b owns rows [cu[b], cu[b+1]).
  template <class T>
  void update_varlen(const Tensor3<T>& k, const int32_t* cu_seqlens_k, int num_threads = 0) {
    check_view(k, k.shape[1], k.shape[2]);
    detail::require_not_null(cu_seqlens_k, "cu_seqlens_k");
    detail::require(cu_seqlens_k[0] == 0, "cu_seqlens_k[0]", cu_seqlens_k[0], "must be 0");
    std::vector<int64_t> lens(static_cast<size_t>(batch_));
    for (int64_t b = 0; b < batch_; ++b) {
      if (cu_seqlens_k[b + 1] < cu_seqlens_k[b])
        detail::fail_arg(detail::concat("cu_seqlens_k[", b + 1, "]").c_str(), cu_seqlens_k[b + 1],
                         detail::concat("must be >= cu_seqlens_k[", b, "] (", cu_seqlens_k[b], ")"));
      lens[static_cast<size_t>(b)] = int64_t(cu_seqlens_k[b + 1]) - cu_seqlens_k[b];
    }
    detail::require(cu_seqlens_k[batch_] <= k.shape[0], "cu_seqlens_k[batch]", cu_seqlens_k[batch_],
                    detail::concat("must be <= total_k (", k.shape[0], ")"));
    check_growth(lens);
    using E = std::remove_const_t<T>;
    const E* base = k.data;
    const int64_t s0 = k.stride[0], s1 = k.stride[1];
    extend(lens, num_threads,
           [=](int64_t b, int64_t j, int64_t h) { return base + (int64_t(cu_seqlens_k[b]) + j) * s0 + h * s1; });
  }

  // The keys of validated attention params (the front door's path): pools
  // every sequence up to kv_len(b).
  template <class T>
  void update_from(const AttentionParams<T>& p, int num_threads = 0) {
    const ProblemShape& s = p.shape;
    detail::require(s.batch == batch_ && s.kv_heads == heads_ && s.head_dim == dim_, "moba means shape", batch_,
                    "must match the attention problem's (batch, kv heads, head dim)");
    std::vector<int64_t> lens(static_cast<size_t>(batch_));
    for (int64_t b = 0; b < batch_; ++b) lens[static_cast<size_t>(b)] = s.kv_len(b);
    check_growth(lens);
    extend(lens, num_threads, [&p](int64_t b, int64_t j, int64_t h) { return p.k_row(b, j, h); });
  }

 private:
  template <class V>
  void check_view(const V& k, int64_t heads, int64_t dim) const {
    constexpr int R = V::rank;
    detail::require_not_null(k.data, "k");
    detail::require(k.stride[R - 1] == 1, detail::concat("k.stride[", R - 1, "]").c_str(), k.stride[R - 1],
                    "must be 1 (last dimension contiguous)");
    detail::require(heads == heads_, "num_kv_heads", heads,
                    detail::concat("must equal the means' kv heads (", heads_, ")"));
    detail::require(dim == dim_, "head_dim", dim, detail::concat("must equal the means' head dim (", dim_, ")"));
  }

  void check_growth(const std::vector<int64_t>& lens) const {
    for (int64_t b = 0; b < batch_; ++b)
      if (lens[static_cast<size_t>(b)] < tokens(b))
        detail::fail_arg(detail::concat("kv length of sequence ", b).c_str(), lens[static_cast<size_t>(b)],
                         detail::concat("must be >= the keys already pooled (", tokens(b),
                                        "); a KV cache only grows (call reset() to start over)"));
  }

  // Reallocates for at least `blocks` blocks per sequence, keeping contents.
  void grow(int64_t blocks) {
    if (blocks <= cap_ && !mean_.empty()) return;
    const int64_t ncap = std::max<int64_t>({blocks, 2 * cap_, 16});
    const int64_t nstride = (ncap + 15) / 16 * 16;
    std::vector<float> nmean(static_cast<size_t>(batch_ * heads_ * dim_ * nstride), 0.0f);
    std::vector<float> nsum(static_cast<size_t>(batch_ * heads_ * nstride * dim_), 0.0f);
    for (int64_t bh = 0; bh < batch_ * heads_ && cap_ > 0; ++bh) {
      for (int64_t d = 0; d < dim_; ++d)
        std::copy_n(&mean_[static_cast<size_t>((bh * dim_ + d) * stride_)], cap_,
                    &nmean[static_cast<size_t>((bh * dim_ + d) * nstride)]);
      std::copy_n(&sum_[static_cast<size_t>(bh * stride_ * dim_)], cap_ * dim_,
                  &nsum[static_cast<size_t>(bh * nstride * dim_)]);
    }
    mean_.swap(nmean);
    sum_.swap(nsum);
    cap_ = nstride;
    stride_ = nstride;
  }

  // Pools keys [tokens(b), lens[b]) of every sequence. Row(b, j, h) -> const E*.
  template <class Row>
  void extend(const std::vector<int64_t>& lens, int num_threads, Row row) {
    int64_t need = 0;
    for (int64_t n : lens) need = std::max(need, (n + bs_ - 1) / bs_);
    grow(need);
    struct NoState {};
    cpu::parallel_for<NoState>(batch_ * heads_, cpu::resolve_threads(num_threads), [&](int64_t bh, NoState&) {
      const int64_t b = bh / heads_, h = bh % heads_;
      const int64_t old = tokens(b), now = lens[static_cast<size_t>(b)];
      if (now == old) return;
      float* sums = &sum_[static_cast<size_t>(bh * stride_ * dim_)];
      float* means = &mean_[static_cast<size_t>(bh * dim_ * stride_)];
      for (int64_t j = old; j < now; ++j) {
        const auto* kr = row(b, j, h);
        float* s = sums + (j / bs_) * dim_;
        for (int64_t d = 0; d < dim_; ++d) s[d] += to_float(kr[d]);
      }
      for (int64_t c = old / bs_; c * bs_ < now; ++c) {
        const float count = static_cast<float>(std::min(bs_, now - c * bs_));
        const float* s = sums + c * dim_;
        for (int64_t d = 0; d < dim_; ++d) means[d * stride_ + c] = s[d] / count;
      }
    });
    for (int64_t b = 0; b < batch_; ++b) tokens_[static_cast<size_t>(b)] = lens[static_cast<size_t>(b)];
  }

  int64_t batch_ = 0, heads_ = 0, dim_ = 0, bs_ = 1;
  int64_t cap_ = 0, stride_ = 0;
  std::vector<int64_t> tokens_;
  std::vector<float> mean_;  // [batch][heads][dim][stride]
  std::vector<float> sum_;   // [batch][heads][stride][dim]
};

}  // namespace attnkit
