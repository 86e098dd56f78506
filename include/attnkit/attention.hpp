// The front door: one call for every layout, mask and device. Validates
// everything before it writes anything, then dispatches by where the data
// lives: host memory runs the CPU kernels; device memory (in a translation
// unit compiled by nvcc) runs the CUDA kernels.
#pragma once

#include <type_traits>

#include "attnkit/attnkit.hpp"
#include "attnkit/cpu/forward.hpp"

#if defined(__CUDACC__)
#include "attnkit/cuda/dispatch.cuh"
#define ATTNKIT_HAS_CUDA 1
#else
#define ATTNKIT_HAS_CUDA 0
#endif

namespace attnkit {

namespace detail {
template <class TQ, class TK, class TV, class TO>
using storage_t = std::remove_const_t<TO>;

template <class TQ, class TK, class TV, class TO>
constexpr void check_types() {
  using T = std::remove_const_t<TO>;
  static_assert(!std::is_const_v<TO>, "out must be a view of mutable elements");
  static_assert(std::is_same_v<std::remove_const_t<TQ>, T> && std::is_same_v<std::remove_const_t<TK>, T> &&
                    std::is_same_v<std::remove_const_t<TV>, T>,
                "q, k, v and out must share one storage dtype (float, attnkit::half or attnkit::bfloat16)");
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "storage dtype must be float, attnkit::half or attnkit::bfloat16");
}

template <class T, class Mask>
void run(const AttentionParams<T>& p, const Mask& mask, const AttentionOptions& o, bool on_device) {
  validate_mask_for(mask, p.shape, /*host_lengths=*/!on_device);
#if ATTNKIT_HAS_CUDA
  if (on_device) {
    cuda::attention_forward(p, mask, o);
    return;
  }
#else
  (void)on_device;
#endif
  cpu::attention_forward(p, mask, o);
}

inline bool device_placement(const void* q, const void* k, const void* v, const void* out) {
#if ATTNKIT_HAS_CUDA
  return cuda::on_device(q, k, v, out);  // throws on mixed placements
#else
  (void)q, (void)k, (void)v, (void)out;
  return false;
#endif
}
}  // namespace detail

// Padded BSHD (any strides, last dim contiguous):
//   q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv] -> out [B, Sq, Hq, Dv].
// Per-batch valid lengths, alignment, scale, LSE, softcap, ALiBi, sinks,
// fused RoPE and threads come through `opts`.
template <class TQ, class TK, class TV, class TO, class Mask>
void attention(const Tensor4<TQ>& q, const Tensor4<TK>& k, const Tensor4<TV>& v, const Tensor4<TO>& out,
               const Mask& mask, const AttentionOptions& opts = {}) {
  static_assert(is_mask<Mask>::value, "mask must be an attnkit mask (derive from attnkit::MaskBase)");
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  const bool dev = detail::device_placement(q.data, k.data, v.data, out.data);
  const AttentionParams<T> p = make_params<T>(q, k, v, out, opts, /*host_lengths=*/!dev);
  detail::run(p, mask, opts, dev);
}

// Packed variable length: q [total_q, Hq, D], k [total_k, Hkv, D],
// v [total_k, Hkv, Dv] -> out [total_q, Hq, Dv]; sequences from cu_seqlens.
template <class TQ, class TK, class TV, class TO, class Mask>
void attention_varlen(const Tensor3<TQ>& q, const Tensor3<TK>& k, const Tensor3<TV>& v, const Tensor3<TO>& out,
                      const VarlenSeqs& seqs, const Mask& mask, const AttentionOptions& opts = {}) {
  static_assert(is_mask<Mask>::value, "mask must be an attnkit mask (derive from attnkit::MaskBase)");
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  const bool dev = detail::device_placement(q.data, k.data, v.data, out.data);
  const AttentionParams<T> p = make_params_varlen<T>(q, k, v, out, seqs, opts, /*host_lengths=*/!dev);
  detail::run(p, mask, opts, dev);
}

}  // namespace attnkit

// MoBA through the same front door: attention(q, k, v, out, MobaConfig{...}, opts).
// (moba.hpp includes this header itself; the include guard makes the cycle safe.)
#include "attnkit/moba/moba.hpp"
