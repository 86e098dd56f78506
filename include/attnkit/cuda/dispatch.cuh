// The CUDA side of attnkit::attention (the contract with attention.hpp):
//   on_device(q, k, v, out)        where the data lives (mixed = Error)
//   attention_forward(p, mask, o)  validate for the GPU, pick the head-dim
//                                  instantiation, launch on o.cuda_stream.
// Device calls take device (or managed) pointers for everything the kernel
// reads: lengths, cu_seqlens, lse, ALiBi slopes, sink logits, mask arrays.
// Storage must be fp16 or bf16 (fp32 on the GPU is a clear Error: convert,
// or run it on the host). Head dims 64, 96, 128, 256 with Dv == D. RoPE is
// fused into the flash kernel for decode and for ReRoPE / Leaky ReRoPE (every
// style and scaling, explicit positions; ReRoPE with causal-type masks): the
// configuration carries the RoPE policy (FwdConfig's kRope), so calls without
// RoPE run the plain kernel unchanged. Absolute RoPE in prefill runs as a
// rotation pre-pass (rope_prepass.cuh), measured faster there (see
// attention_forward); forward_rope() forces the fused kernel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "attnkit/core/error.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/driver.cuh"
#include "attnkit/cuda/launch.cuh"
#include "attnkit/cuda/rope_fused.cuh"
#include "attnkit/cuda/rope_prepass.cuh"
#include "attnkit/cuda/sm90/forward_sm90.cuh"
#include "attnkit/mask/traits.hpp"
#include "attnkit/rope/config.hpp"
#include "attnkit/rope/frequencies.hpp"

namespace attnkit::cuda {

namespace detail {

enum class Where { Host, Device, Unknown };

// cuPointerGetAttributes (driver.cuh); nullptr where the driver does not
// have it. Four pointers cost ~0.32 us against cudaPointerGetAttributes'
// ~0.59 us (H100 host, bench/cuda/NOTES-decode.md, Session 10), and
// on_device asks for four on every call. The plural form, not
// cuPointerGetAttribute: for memory CUDA does not know (pageable host) it
// returns success with null attributes, where the singular returns an error
// that compute-sanitizer reports in the user's run (Session 10's memcheck
// call: 9 such reports).
inline decltype(&cuPointerGetAttributes) pointer_attributes_query() {
  static const auto fn = driver_function<decltype(&cuPointerGetAttributes)>("cuPointerGetAttributes");
  return fn;
}

// Device and managed memory run on the GPU; pageable and pinned host memory
// on the CPU. With no usable CUDA device everything is host.
inline Where where(const void* ptr) {
  if (const auto query = pointer_attributes_query()) {
    CUpointer_attribute attrs[2] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_IS_MANAGED};
    unsigned type = 0, managed = 0;
    void* values[2] = {&type, &managed};
    // Only a positive answer is taken: memory the driver does not know
    // (pageable host, or anything when this thread has no context yet) asks
    // the runtime below, as before.
    if (query(2, attrs, values, reinterpret_cast<CUdeviceptr>(ptr)) == CUDA_SUCCESS) {
      if (type == CU_MEMORYTYPE_DEVICE || managed) return Where::Device;
      if (type == CU_MEMORYTYPE_HOST) return Where::Host;
    }
  }
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Where::Host;
  }
  return (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) ? Where::Device : Where::Host;
}
inline const char* name(Where w) { return w == Where::Device ? "device" : "host"; }

// An optional array the kernel dereferences must be device-accessible.
inline void require_device_ptr(const void* ptr, const char* what) {
  if (ptr && where(ptr) != Where::Device)
    attnkit::detail::fail(attnkit::detail::concat(
        what, " is a host pointer but the tensors are on the GPU; pass device (or managed) memory"));
}

inline void require_aligned(const void* ptr, const SeqLayout& l, const char* name, bool varlen) {
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  if (addr % 16 != 0)
    attnkit::detail::fail(attnkit::detail::concat(name, ".data must be 16-byte aligned on the GPU (16-byte loads)"));
  auto check_stride = [&](int64_t st, const char* dim) {
    if (st % 8 != 0)
      attnkit::detail::fail_arg(attnkit::detail::concat(name, ".", dim, "_stride").c_str(), st,
                                "must be a multiple of 8 elements on the GPU (16-byte loads)");
  };
  if (!varlen) check_stride(l.batch_stride, "batch");
  check_stride(l.row_stride, "row");
  check_stride(l.head_stride, "head");
}

}  // namespace detail

// True when q, k, v and out are all device (or managed) memory, false when
// all are host memory; anything in between is an Error naming each placement.
inline bool on_device(const void* q, const void* k, const void* v, const void* out) {
  using detail::Where;
  const Where w[4] = {detail::where(q), detail::where(k), detail::where(v), detail::where(out)};
  if (w[0] == w[1] && w[1] == w[2] && w[2] == w[3]) return w[0] == Where::Device;
  attnkit::detail::fail(attnkit::detail::concat(
      "q, k, v and out must all be in device memory or all in host memory; q is ", detail::name(w[0]), ", k is ",
      detail::name(w[1]), ", v is ", detail::name(w[2]), ", out is ", detail::name(w[3])));
}

// Everything the GPU path needs beyond make_params' checks, before any launch.
template <class T>
void check_gpu_problem(const AttentionParams<T>& p, const AttentionOptions& o) {
  if constexpr (std::is_same_v<T, float>) {
    (void)p, (void)o;
    attnkit::detail::fail(
        "float32 storage is not supported on the GPU (tensor-core kernels take f16/bf16); convert to attnkit::half "
        "or attnkit::bfloat16, or run on host memory");
  } else {
    const ProblemShape& s = p.shape;
    if (o.rope) {
      detail::require_device_ptr(p.q_positions, "q_positions");
      detail::require_device_ptr(p.kv_positions, "kv_positions");
      if (o.rope->scaling == RopeScaling::DynamicNTK && (p.q_positions || p.kv_positions))
        attnkit::detail::fail(
            "dynamic NTK RoPE with device-resident positions is not supported on the GPU (its base depends on the "
            "largest position); resolve the base on the host and use RopeScaling::NTK");
    }
    if (s.v_head_dim != s.head_dim)
      attnkit::detail::fail_arg("v_head_dim", s.v_head_dim,
                                attnkit::detail::concat("must equal head_dim (", s.head_dim, ") on the GPU"));
    const int64_t D = s.head_dim;
    if (D != 64 && D != 96 && D != 128 && D != 256)
      attnkit::detail::fail_arg("head_dim", D, "must be 64, 96, 128 or 256 on the GPU");
    attnkit::detail::require(s.batch <= 65535, "batch", s.batch, "must be <= 65535 on the GPU");
    attnkit::detail::require(s.q_heads <= 65535, "num_q_heads", s.q_heads, "must be <= 65535 on the GPU");
    detail::require_aligned(p.q, p.q_layout, "q", s.varlen());
    detail::require_aligned(p.k, p.k_layout, "k", s.varlen());
    detail::require_aligned(p.v, p.v_layout, "v", s.varlen());
    detail::require_aligned(p.out, p.o_layout, "out", s.varlen());
    detail::require_device_ptr(p.lse, "lse");
    detail::require_device_ptr(p.alibi_slopes, "alibi_slopes");
    detail::require_device_ptr(p.sink_logits, "sink_logits");
    detail::require_device_ptr(s.q_lens, "q_lens");
    detail::require_device_ptr(s.kv_lens, "kv_lens");
    detail::require_device_ptr(s.cu_q, "cu_seqlens_q");
    detail::require_device_ptr(s.cu_k, "cu_seqlens_k");
  }
}

// The RoPE form of a kernel configuration. ReRoPE / Leaky ReRoPE prefill
// keeps one m-tile per warp: near and far scores are live together, next to
// the O accumulators (two m-tiles would spill).
template <class Cfg, RopeKind K>
struct WithRope {
  static constexpr int kMTiles = K == RopeKind::Relative ? 1 : Cfg::kMTiles;
  using type = FwdConfig<typename Cfg::Elem, Cfg::D, Cfg::kWarps, kMTiles, Cfg::kBlockN, Cfg::kPack, K>;
};

// forward_hdim with fused RoPE (`rope` from make_fused_rope on the same stream).
// kDecodeOnly: the caller never sends a prefill here (its prefill kernels are
// then not compiled).
template <int D, RopeKind K, bool kDecodeOnly = false, class T, class Mask>
void forward_hdim_rope(const AttentionParams<T>& p, const Mask& mask, const FusedRope& rope, cudaStream_t stream) {
  static_assert(K != RopeKind::None, "use forward_hdim");
  if (p.shape.q_capacity <= kDecodeMaxQueries) {
    forward_with<typename WithRope<typename Configs<T, D>::Decode, K>::type>(p, mask, stream, true, rope);
  } else if constexpr (kDecodeOnly) {
    attnkit::detail::fail("internal: a prefill reached the decode-only fused-RoPE path");
  } else {
    forward_with<typename WithRope<typename Configs<T, D>::Prefill, K>::type>(p, mask, stream, false, rope);
  }
}

// One call with fused RoPE, resolved `rp`: builds the cos/sin table on the
// stream, runs the RoPE kernel, frees the table (stream-ordered). `table`
// false computes every angle on the fly (measurements).
// kAbsoluteDecodeOnly: absolute RoPE only ever arrives here for decode (the
// front door sends absolute-RoPE prefill to the pre-pass).
template <bool kAbsoluteDecodeOnly = false, class T, class Mask>
void forward_rope(const AttentionParams<T>& p, const Mask& mask, const rope::RopeParams& rp, cudaStream_t stream,
                  bool table = true) {
  const ProblemShape& s = p.shape;
  if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
  if (rp.is_relative() && !is_causal_type<Mask>::value)
    attnkit::detail::fail(
        "ReRoPE / Leaky ReRoPE clip the relative position p - j and need a causal-type mask (CausalMask, "
        "SlidingWindowMask, SinkWindowMask, or a conjunction with one of them)");
  void* ws = nullptr;
  const FusedRope fr = make_fused_rope(rp, s, stream, detail::workspace_pool(), &ws, table);
  auto run = [&](auto kind_tag) {
    constexpr RopeKind K = decltype(kind_tag)::value;
    switch (s.head_dim) {
      case 64:
        forward_hdim_rope<64, K, kAbsoluteDecodeOnly && K == RopeKind::Absolute>(p, mask, fr, stream);
        break;
      case 96:
        forward_hdim_rope<96, K, kAbsoluteDecodeOnly && K == RopeKind::Absolute>(p, mask, fr, stream);
        break;
      case 128:
        forward_hdim_rope<128, K, kAbsoluteDecodeOnly && K == RopeKind::Absolute>(p, mask, fr, stream);
        break;
      default:
        forward_hdim_rope<256, K, kAbsoluteDecodeOnly && K == RopeKind::Absolute>(p, mask, fr, stream);
        break;
    }
  };
  if constexpr (is_causal_type<Mask>::value) {
    if (rp.is_relative())
      run(std::integral_constant<RopeKind, RopeKind::Relative>{});
    else
      run(std::integral_constant<RopeKind, RopeKind::Absolute>{});
  } else {
    run(std::integral_constant<RopeKind, RopeKind::Absolute>{});
  }
  detail::check(cudaFreeAsync(ws, stream), "cudaFreeAsync (RoPE table)");
}

// The kernels without RoPE, head dim chosen at run time. Prefill at D 64 /
// 128 runs the Hopper wgmma kernel (sm90/forward_sm90.cuh) where the device is
// compute capability 9.0 and the binary carries sm_90a machine code.
template <class T, class Mask>
void forward_plain(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  if (sm90::try_forward_sm90(p, mask, stream)) return;
  switch (p.shape.head_dim) {
    case 64:
      forward_hdim<64>(p, mask, stream);
      break;
    case 96:
      forward_hdim<96>(p, mask, stream);
      break;
    case 128:
      forward_hdim<128>(p, mask, stream);
      break;
    default:
      forward_hdim<256>(p, mask, stream);
      break;
  }
}

template <class T, class Mask>
void attention_forward(const AttentionParams<T>& p, const Mask& mask, const AttentionOptions& o) {
  check_gpu_problem(p, o);
  if constexpr (!std::is_same_v<T, float>) {
    const ProblemShape& s = p.shape;
    if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
    const auto stream = static_cast<cudaStream_t>(o.cuda_stream);
    if (o.rope) {
      // DynamicNTK's current length: 1 + the largest default position, bounded
      // by the capacities (device-resident lengths are not read here).
      const int64_t seq_len =
          s.alignment == Alignment::BottomRight ? s.kv_capacity : std::max(s.q_capacity, s.kv_capacity);
      const rope::RopeParams rp = rope::resolve(*o.rope, s.head_dim, seq_len);
      if (rp.enabled() && (rp.is_relative() || s.q_capacity <= kDecodeMaxQueries)) {
        forward_rope</*kAbsoluteDecodeOnly=*/true>(p, mask, rp, stream);
        return;
      }
      if (rp.enabled()) {
        // Absolute RoPE in prefill: rotating copies of q and k once beats rotating
        // every K tile in every CTA that reads it (each query head and row block
        // re-rotates the shared tiles): fused +48% over no RoPE vs the pre-pass's
        // +21% at Llama-3 shapes (bench/cuda/NOTES.md). Decode and ReRoPE run fused.
        void* ws = nullptr;
        const AttentionParams<T> rotated = rope_prepass(p, rp, stream, detail::workspace_pool(), &ws);
        forward_plain(rotated, mask, stream);
        detail::check(cudaFreeAsync(ws, stream), "cudaFreeAsync (RoPE workspace)");
        return;
      }
    }
    forward_plain(p, mask, stream);
  } else {
    (void)mask;
  }
}

}  // namespace attnkit::cuda
