// Standalone RoPE, in place on q or k, for users who cache rotated keys or run
// their own attention. The fused path (AttentionOptions::rope) uses the same
// math (rope/rotate.hpp) and gives the same numbers within fp32 rounding.
//
//   apply_rope(x [B, S, H, D], cfg, opts)          padded BSHD, any strides
//   apply_rope_varlen(x [total, H, D], cu, B, cfg)  packed sequences
//
// Positions: an explicit per-token array (left padding, packed documents,
// speculative decoding) or start_position + the token's row in its sequence.
// Relative modes (ReRoPE, Leaky ReRoPE) are rejected: they depend on p - j and
// cannot be applied to q and k separately (use the fused attention).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/cpu/simd.hpp"  // cpu::to_float_row
#include "attnkit/rope/config.hpp"
#include "attnkit/rope/frequencies.hpp"
#include "attnkit/rope/rotate.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace attnkit {

struct ApplyRopeOptions {
  // Explicit positions, one per token: padded [B, S] contiguous, varlen
  // [total]. Null: token s of a sequence sits at start_position + s.
  const int64_t* positions = nullptr;
  // Position of each sequence's first row when `positions` is null (the
  // number of tokens already in the KV cache).
  int64_t start_position = 0;
  // DynamicNTK's current sequence length; 0 = largest position in this call + 1
  // (Hugging Face: max(position_ids) + 1). Ignored by the other scalings.
  int64_t seq_len = 0;
  // Threads (0 = OpenMP's default, 1 = serial). Results are bit-identical
  // whatever the count: each token is computed by the same code alone.
  int num_threads = 0;
};

namespace rope {
namespace detail {

using attnkit::detail::concat;
using attnkit::detail::fail;
using attnkit::detail::require;

template <class T>
constexpr void check_storage_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "apply_rope: storage dtype must be float, attnkit::half or attnkit::bfloat16");
}

template <class V>
void check_view(const V& x) {
  constexpr int R = V::rank;
  for (int d = 0; d < R; ++d)
    if (x.shape[d] < 0) attnkit::detail::fail_arg(concat("x.shape[", d, "]").c_str(), x.shape[d], "must be >= 0");
  if (x.numel() == 0) return;
  attnkit::detail::require_not_null(x.data, "x");
  if (x.stride[R - 1] != 1)
    attnkit::detail::fail_arg(concat("x.stride[", R - 1, "]").c_str(), x.stride[R - 1],
                              "must be 1 (last dimension contiguous)");
}

inline void check_not_relative(const RopeConfig& cfg) {
  if (cfg.is_relative())
    fail(concat("rope.relative (", to_string(cfg.relative),
                ") acts on the distance p - j between a query and a key and cannot be applied to q and k "
                "separately; pass the config to attention() through AttentionOptions::rope instead"));
}

inline int thread_count(int requested) {
  require(requested >= 0, "num_threads", requested, "must be >= 0 (0 = OpenMP's default)");
#if defined(_OPENMP)
  return requested > 0 ? requested : omp_get_max_threads();
#else
  return 1;
#endif
}

// float -> storage, rounding to nearest even exactly as half/bfloat16::from_float,
// in loops the compiler vectorises (F16C/AVX-512 for half). The rotation is
// cheap; without this the scalar conversion dominated apply_rope 3-6x.
inline void store_row(const float* src, bfloat16* dst, int n) {
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
  ATTNKIT_ROPE_SIMD
  for (int d = 0; d < n; ++d) {
    uint32_t u;
    std::memcpy(&u, src + d, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;
    out[d] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}
inline void store_row(const float* src, half* dst, int n) {
  int d = 0;
#if defined(__AVX512F__)
  for (; d + 16 <= n; d += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__)
  for (; d + 8 <= n; d += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + d),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; d < n; ++d) dst[d] = from_float<half>(src[d]);
}

// Rotate the first R dims of `heads` rows (head h at row + h * head_stride)
// that share one token position, with that position's cos/sin.
template <class T>
void rotate_token(const RopeParams& p, T* row, int64_t heads, int64_t head_stride, const float* cos, const float* sin) {
  for (int64_t h = 0; h < heads; ++h) {
    T* x = row + h * head_stride;
    if constexpr (std::is_same_v<T, float>) {
      rotate_with(p, x, cos, sin);
    } else {
      float buf[2 * kMaxRotaryPairs];
      cpu::to_float_row(x, buf, p.rotary_dim);
      rotate_with(p, buf, cos, sin);
      store_row(buf, x, p.rotary_dim);
    }
  }
}

// The shared driver. Token n in [0, tokens) lives at base + offset(n) and has
// position position_of(n). Default positions all fall in [lo, hi), so one
// RopeTable serves every batch entry; explicit positions are computed per token.
template <class T, class Offset, class Position>
void run(const RopeParams& p, T* base, int64_t tokens, int64_t heads, int64_t head_stride, Offset offset,
         Position position_of, bool explicit_positions, int64_t lo, int64_t hi, int threads) {
  if (tokens == 0 || heads == 0 || p.pairs == 0) return;
  (void)threads;
  if (!explicit_positions) {
    const RopeTable table(p, lo, hi - lo, threads);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (int64_t n = 0; n < tokens; ++n) {
      const int64_t t = position_of(n);
      rotate_token(p, base + offset(n), heads, head_stride, table.cos_row(t), table.sin_row(t));
    }
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
  for (int64_t n = 0; n < tokens; ++n) {
    float cos[kMaxRotaryPairs], sin[kMaxRotaryPairs];
    fill_cos_sin(p, static_cast<double>(position_of(n)), cos, sin);
    rotate_token(p, base + offset(n), heads, head_stride, cos, sin);
  }
}

}  // namespace detail
}  // namespace rope

// Padded BSHD, in place: x [B, S, H, D] (any strides, last dim contiguous).
// Explicit positions: opts.positions [B, S] contiguous.
template <class T>
void apply_rope(const TensorView<T, 4>& x, const RopeConfig& cfg, const ApplyRopeOptions& opts = {}) {
  namespace rd = rope::detail;
  rd::check_storage_type<T>();
  rd::check_view(x);
  rd::check_not_relative(cfg);
  const int threads = rd::thread_count(opts.num_threads);
  const int64_t B = x.shape[0], S = x.shape[1], H = x.shape[2], D = x.shape[3];
  const bool explicit_positions = opts.positions != nullptr;
  if (!explicit_positions) rd::require(opts.start_position >= 0, "start_position", opts.start_position, "must be >= 0");
  int64_t seq_len = opts.seq_len;
  if (seq_len == 0 && B * S > 0)
    seq_len = explicit_positions ? rope::sequence_length_of(opts.positions, B * S) : opts.start_position + S;
  const rope::RopeParams p = rope::resolve(cfg, D, std::max<int64_t>(seq_len, 0));
  if (x.numel() == 0) return;

  const auto offset = [&](int64_t n) { return (n / S) * x.stride[0] + (n % S) * x.stride[1]; };
  const int64_t start = opts.start_position;
  const int64_t* pos = opts.positions;
  const auto position_of = [=](int64_t n) { return pos ? pos[n] : start + n % S; };
  rd::run(p, x.data, B * S, H, x.stride[2], offset, position_of, explicit_positions, start, start + S, threads);
}

// Packed varlen, in place: x [total, H, D]; sequence b owns rows
// [cu_seqlens[b], cu_seqlens[b+1]). Explicit positions: opts.positions [total].
template <class T>
void apply_rope_varlen(const TensorView<T, 3>& x, const int32_t* cu_seqlens, int64_t batch, const RopeConfig& cfg,
                       const ApplyRopeOptions& opts = {}) {
  namespace rd = rope::detail;
  rd::check_storage_type<T>();
  rd::check_view(x);
  rd::check_not_relative(cfg);
  const int threads = rd::thread_count(opts.num_threads);
  rd::require(batch >= 0, "batch", batch, "must be >= 0");
  attnkit::detail::require_not_null(cu_seqlens, "cu_seqlens");
  const int64_t total = x.shape[0], H = x.shape[1], D = x.shape[2];
  rd::require(cu_seqlens[0] == 0, "cu_seqlens[0]", cu_seqlens[0], "must be 0");
  int64_t max_len = 0;
  for (int64_t b = 0; b < batch; ++b) {
    if (cu_seqlens[b + 1] < cu_seqlens[b])
      rd::fail(rd::concat("cu_seqlens[", b + 1, "] (", cu_seqlens[b + 1], ") must be >= cu_seqlens[", b, "] (",
                          cu_seqlens[b], ")"));
    max_len = std::max<int64_t>(max_len, cu_seqlens[b + 1] - cu_seqlens[b]);
  }
  rd::require(cu_seqlens[batch] <= total, "cu_seqlens[batch]", cu_seqlens[batch],
              rd::concat("must be <= the rows of x (", total, ")"));
  const int64_t rows = cu_seqlens[batch];
  const bool explicit_positions = opts.positions != nullptr;
  if (!explicit_positions) rd::require(opts.start_position >= 0, "start_position", opts.start_position, "must be >= 0");
  int64_t seq_len = opts.seq_len;
  if (seq_len == 0 && rows > 0)
    seq_len = explicit_positions ? rope::sequence_length_of(opts.positions, rows) : opts.start_position + max_len;
  const rope::RopeParams p = rope::resolve(cfg, D, std::max<int64_t>(seq_len, 0));
  if (rows == 0 || H == 0) return;

  // Row -> sequence start, so each token finds its in-sequence index without a search.
  std::vector<int32_t> seq_start;
  if (!explicit_positions) {
    seq_start.resize(static_cast<size_t>(rows));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t r = cu_seqlens[b]; r < cu_seqlens[b + 1]; ++r) seq_start[static_cast<size_t>(r)] = cu_seqlens[b];
  }
  const int32_t* starts = seq_start.data();
  const auto offset = [&](int64_t n) { return n * x.stride[0]; };
  const int64_t start = opts.start_position;
  const int64_t* pos = opts.positions;
  const auto position_of = [=](int64_t n) { return pos ? pos[n] : start + (n - starts[n]); };
  rd::run(p, x.data, rows, H, x.stride[1], offset, position_of, explicit_positions, start, start + max_len, threads);
}

}  // namespace attnkit
