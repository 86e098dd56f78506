// MoBA (mixture of block attention) through the front door, for hybrid models:
//
//   attention(q, k, v, out, CausalMask{}, opts);               // a full-attention layer
//   attention(q, k, v, out, MobaConfig{512, 3}, opts);         // a MoBA layer
//   attention_varlen(q, k, v, out, seqs, MobaConfig{...}, opts);
//
// The strategy argument decides; everything else (layouts, GQA, lengths,
// alignment, scale, LSE, softcap, ALiBi, sinks, RoPE, threads) is shared.
// Decode with a growing KV cache keeps a MobaBlockMeans and passes it to
// moba_attention(...) so the block means are not recomputed every token.
// moba_select(...) returns the blocks each query row chose, for inspection
// and for running the fp64 reference under the exact implied mask.
//
// RoPE (opts.rope): the gate must see the same rotated q and k as the
// attention, so q and k are rotated into temporary copies (apply_rope, at the
// positions DESIGN §2 gives them or opts.q_positions / kv_positions) before
// the gate and the attention run on them. That costs a copy of q and k per
// call; for decode over a long cache, cache rotated keys and leave opts.rope
// null. Relative schemes (ReRoPE, Leaky ReRoPE) are rejected: the gate's
// block means need keys rotated independently of the query.
// Device tensors (in a translation unit compiled by nvcc) run the CUDA path
// (moba_cuda.cuh): the same semantics, ALiBi rejected; block means are
// recomputed per call, or kept across decode steps by a
// moba::cuda::MobaDeviceMeans (MobaBlockMeans are host-side).
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "attnkit/attention.hpp"
#include "attnkit/moba/block_means.hpp"
#include "attnkit/moba/config.hpp"
#include "attnkit/moba/moba_cpu.hpp"
#include "attnkit/moba/selection.hpp"
#include "attnkit/rope/apply.hpp"
#include "attnkit/rope/config.hpp"
#include "attnkit/rope/frequencies.hpp"
#if ATTNKIT_HAS_CUDA
#include "attnkit/moba/moba_cuda.cuh"
#endif

namespace attnkit {

namespace moba {
namespace detail {

using attnkit::detail::concat;
using attnkit::detail::fail;

// Validated params plus, with opts.rope, rotated copies of q and k that the
// params point to instead of the caller's tensors.
template <class T>
struct Prepared {
  AttentionParams<T> p;
  std::vector<T> q, k;
};

// Checks the RoPE config before anything is written (outputs untouched).
inline void check_rope(const AttentionOptions& o, int64_t head_dim) {
  if (!o.rope) return;
  if (o.rope->is_relative())
    fail(concat("rope.relative (", to_string(o.rope->relative),
                ") cannot be combined with MoBA: the gate's block means need keys rotated independently of the "
                "query (use an absolute RoPE scaling)"));
  (void)rope::resolve(*o.rope, head_dim, 1);  // validates the config against the head dim
}

// Rotates contiguous copies of q and k and repoints p at them.
template <class T>
void rotate_copies(Prepared<T>& pr, const RopeConfig& cfg, int threads) {
  AttentionParams<T>& p = pr.p;
  const ProblemShape& s = p.shape;
  const int64_t Hq = s.q_heads, Hkv = s.kv_heads, D = s.head_dim;
  const bool varlen = s.varlen();
  const int64_t q_rows = varlen ? s.total_q : s.batch * s.q_capacity;
  const int64_t k_rows = varlen ? (s.batch > 0 ? int64_t(s.cu_k[s.batch]) : 0) : s.batch * s.kv_capacity;
  pr.q.resize(static_cast<size_t>(q_rows * Hq * D));
  pr.k.resize(static_cast<size_t>(std::max<int64_t>(k_rows, 1) * Hkv * D));
  std::vector<int64_t> qpos(static_cast<size_t>(std::max<int64_t>(q_rows, 1)), 0),
      kpos(static_cast<size_t>(std::max<int64_t>(k_rows, 1)), 0);
  int64_t max_pos = 0;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t q0 = varlen ? s.cu_q[b] : b * s.q_capacity, k0 = varlen ? s.cu_k[b] : b * s.kv_capacity;
    for (int64_t j = 0; j < s.kv_len(b); ++j) {
      const int64_t t = p.kv_position(b, j);
      kpos[static_cast<size_t>(k0 + j)] = t;
      max_pos = std::max(max_pos, t);
      for (int64_t h = 0; h < Hkv; ++h)
        std::copy_n(p.k_row(b, j, h), D, &pr.k[static_cast<size_t>(((k0 + j) * Hkv + h) * D)]);
    }
    for (int64_t i = 0; i < s.q_len(b); ++i) {
      // Rows that see no key (p < 0) are rotated at 0: their output is 0 anyway.
      qpos[static_cast<size_t>(q0 + i)] = std::max<int64_t>(0, p.q_position(b, i));
      for (int64_t h = 0; h < Hq; ++h)
        std::copy_n(p.q_row(b, i, h), D, &pr.q[static_cast<size_t>(((q0 + i) * Hq + h) * D)]);
    }
  }
  ApplyRopeOptions ro;
  ro.seq_len = max_pos + 1;  // the same DynamicNTK length for q and k
  ro.num_threads = threads;
  ro.positions = qpos.data();
  apply_rope(TensorView<T, 4>(pr.q.data(), {1, q_rows, Hq, D}), cfg, ro);
  ro.positions = kpos.data();
  apply_rope(TensorView<T, 4>(pr.k.data(), {1, k_rows, Hkv, D}), cfg, ro);
  p.q = pr.q.data();
  p.k = pr.k.data();
  if (varlen) {
    p.q_layout = {0, Hq * D, D};
    p.k_layout = {0, Hkv * D, D};
  } else {
    p.q_layout = {s.q_capacity * Hq * D, Hq * D, D};
    p.k_layout = {s.kv_capacity * Hkv * D, Hkv * D, D};
  }
}

template <class T>
void prepare(Prepared<T>& pr, const AttentionOptions& o, int threads) {
  check_rope(o, pr.p.shape.head_dim);
  if (o.rope) rotate_copies(pr, *o.rope, threads);
}

// Cached block means live on the host; the GPU path computes its own.
inline void reject_device_means(bool on_device) {
  if (on_device)
    fail(
        "cached MobaBlockMeans are host-side and cannot drive a GPU call: keep a moba::cuda::MobaDeviceMeans, "
        "or call attention(..., MobaConfig, opts), which computes the block means on the device");
}

// The GPU path on device params (no-op without nvcc: nothing is on a device then).
template <class T>
void run_device(const AttentionParams<T>& p, const MobaConfig& cfg, const AttentionOptions& o) {
  check_rope(o, p.shape.head_dim);
#if ATTNKIT_HAS_CUDA
  moba::cuda::forward(p, cfg, o);
#else
  (void)p, (void)cfg, (void)o;
#endif
}

template <class T>
MobaSelection select_device(const AttentionParams<T>& p, const MobaConfig& cfg, const AttentionOptions& o) {
  check_rope(o, p.shape.head_dim);
#if ATTNKIT_HAS_CUDA
  return moba::cuda::select(p, cfg, o);
#else
  (void)p, (void)cfg, (void)o;
  return {};
#endif
}

// The whole call on validated params: means (given or computed), gate, attention.
template <class T>
void run(Prepared<T>& pr, const MobaConfig& cfg, const MobaBlockMeans* means, const AttentionOptions& o) {
  const int threads = cpu::resolve_threads(o.num_threads);
  const AttentionParams<T>& p = pr.p;
  MobaBlockMeans local;
  if (means) {
    check_means(p, means->view(), cfg);
  }
  prepare(pr, o, threads);  // last check (RoPE) before anything is written
  if (!means) {
    local = MobaBlockMeans(p.shape.batch, p.shape.kv_heads, p.shape.head_dim, cfg.block_size, p.shape.kv_capacity);
    local.update_from(p, threads);
    means = &local;
  }
  const MobaSelection sel = select(p, cfg, means->view(), threads);
  forward(p, cfg, sel, threads);
}

template <class T>
MobaSelection run_select(Prepared<T>& pr, const MobaConfig& cfg, const MobaBlockMeans* means,
                         const AttentionOptions& o) {
  const int threads = cpu::resolve_threads(o.num_threads);
  if (means) check_means(pr.p, means->view(), cfg);
  prepare(pr, o, threads);
  MobaBlockMeans local;
  if (!means) {
    const ProblemShape& s = pr.p.shape;
    local = MobaBlockMeans(s.batch, s.kv_heads, s.head_dim, cfg.block_size, s.kv_capacity);
    local.update_from(pr.p, threads);
    means = &local;
  }
  return select(pr.p, cfg, means->view(), threads);
}

}  // namespace detail
}  // namespace moba

// ---- the front door: MoBA as the strategy argument -------------------------

// Padded BSHD: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv] -> out [B, Sq, Hq, Dv].
template <class TQ, class TK, class TV, class TO>
void attention(const Tensor4<TQ>& q, const Tensor4<TK>& k, const Tensor4<TV>& v, const Tensor4<TO>& out,
               const MobaConfig& cfg, const AttentionOptions& opts = {}) {
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  detail::validate_moba_config(cfg);
  const bool dev = detail::device_placement(q.data, k.data, v.data, out.data);
  if (dev) return moba::detail::run_device(make_params<T>(q, k, v, out, opts, /*host_lengths=*/false), cfg, opts);
  moba::detail::Prepared<T> pr{make_params<T>(q, k, v, out, opts), {}, {}};
  moba::detail::run(pr, cfg, nullptr, opts);
}

// Packed varlen: q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv] -> out [total_q, Hq, Dv].
template <class TQ, class TK, class TV, class TO>
void attention_varlen(const Tensor3<TQ>& q, const Tensor3<TK>& k, const Tensor3<TV>& v, const Tensor3<TO>& out,
                      const VarlenSeqs& seqs, const MobaConfig& cfg, const AttentionOptions& opts = {}) {
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  detail::validate_moba_config(cfg);
  const bool dev = detail::device_placement(q.data, k.data, v.data, out.data);
  if (dev)
    return moba::detail::run_device(make_params_varlen<T>(q, k, v, out, seqs, opts, /*host_lengths=*/false), cfg, opts);
  moba::detail::Prepared<T> pr{make_params_varlen<T>(q, k, v, out, seqs, opts), {}, {}};
  moba::detail::run(pr, cfg, nullptr, opts);
}

// ---- decode with cached block means -----------------------------------------

// As attention(..., cfg, opts), with block means kept by the caller (e.g. a
// KV cache: means.update(k_cache, kv_lens) after appending tokens). `means`
// must cover exactly kv_len(b) keys of every sequence, with cfg.block_size,
// of the keys as the gate sees them (rotated, when RoPE is in use).
template <class TQ, class TK, class TV, class TO>
void moba_attention(const Tensor4<TQ>& q, const Tensor4<TK>& k, const Tensor4<TV>& v, const Tensor4<TO>& out,
                    const MobaConfig& cfg, const MobaBlockMeans& means, const AttentionOptions& opts = {}) {
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  detail::validate_moba_config(cfg);
  moba::detail::reject_device_means(detail::device_placement(q.data, k.data, v.data, out.data));
  moba::detail::Prepared<T> pr{make_params<T>(q, k, v, out, opts), {}, {}};
  moba::detail::run(pr, cfg, &means, opts);
}

template <class TQ, class TK, class TV, class TO>
void moba_attention_varlen(const Tensor3<TQ>& q, const Tensor3<TK>& k, const Tensor3<TV>& v, const Tensor3<TO>& out,
                           const VarlenSeqs& seqs, const MobaConfig& cfg, const MobaBlockMeans& means,
                           const AttentionOptions& opts = {}) {
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  detail::validate_moba_config(cfg);
  moba::detail::reject_device_means(detail::device_placement(q.data, k.data, v.data, out.data));
  moba::detail::Prepared<T> pr{make_params_varlen<T>(q, k, v, out, seqs, opts), {}, {}};
  moba::detail::run(pr, cfg, &means, opts);
}

#if ATTNKIT_HAS_CUDA
// The same on the GPU, with block means kept on the device across decode
// steps (moba::cuda::MobaDeviceMeans; means.update(k_cache, kv_lens) after
// appending keys). Padded layout; q, k, v, out in device memory.
template <class TQ, class TK, class TV, class TO>
void moba_attention(const Tensor4<TQ>& q, const Tensor4<TK>& k, const Tensor4<TV>& v, const Tensor4<TO>& out,
                    const MobaConfig& cfg, const moba::cuda::MobaDeviceMeans& means,
                    const AttentionOptions& opts = {}) {
  detail::check_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TO>;
  detail::validate_moba_config(cfg);
  if (!detail::device_placement(q.data, k.data, v.data, out.data))
    moba::detail::fail("MobaDeviceMeans drive GPU calls: q, k, v and out must be in device memory");
  const AttentionParams<T> p = make_params<T>(q, k, v, out, opts, /*host_lengths=*/false);
  moba::detail::check_rope(opts, p.shape.head_dim);
  moba::cuda::forward(p, cfg, opts, &means);
}
#endif

// ---- inspection ---------------------------------------------------------------

// The blocks every (sequence, query head, query row) chooses for q and k
// (after RoPE when opts.rope is set), exactly as attention(..., cfg, opts)
// would. Padded layout (opts.q_lens / kv_lens honoured).
template <class TQ, class TK>
MobaSelection moba_select(const Tensor4<TQ>& q_in, const Tensor4<TK>& k_in, const MobaConfig& cfg,
                          const AttentionOptions& opts = {}, const MobaBlockMeans* means = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>>, "q and k must share one storage dtype");
  const Tensor4<const T> q = q_in, k = k_in;
  detail::validate_moba_config(cfg);
  if (detail::device_placement(q.data, k.data, q.data, q.data)) {
    // v and out only carry shapes (never read or written): k and q stand in.
    moba::detail::reject_device_means(means != nullptr);
    return moba::detail::select_device(
        make_params<T>(q, k, k, Tensor4<T>(const_cast<T*>(q.data), q.shape, q.stride), opts, /*host_lengths=*/false),
        cfg, opts);
  }
  // v and out only carry shapes here (never read or written).
  T dummy{};
  const Tensor4<const T> v(&dummy, {k.shape[0], k.shape[1], k.shape[2], 1}, {0, 0, 0, 1});
  const Tensor4<T> out(&dummy, {q.shape[0], q.shape[1], q.shape[2], 1}, {0, 0, 0, 1});
  AttentionOptions o = opts;
  o.lse = nullptr;
  moba::detail::Prepared<T> pr{make_params<T>(q, k, v, out, o), {}, {}};
  return moba::detail::run_select(pr, cfg, means, o);
}

template <class TQ, class TK>
MobaSelection moba_select_varlen(const Tensor3<TQ>& q_in, const Tensor3<TK>& k_in, const VarlenSeqs& seqs,
                                 const MobaConfig& cfg, const AttentionOptions& opts = {},
                                 const MobaBlockMeans* means = nullptr) {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, std::remove_const_t<TK>>, "q and k must share one storage dtype");
  const Tensor3<const T> q = q_in, k = k_in;
  detail::validate_moba_config(cfg);
  if (detail::device_placement(q.data, k.data, q.data, q.data)) {
    moba::detail::reject_device_means(means != nullptr);
    return moba::detail::select_device(
        make_params_varlen<T>(q, k, k, Tensor3<T>(const_cast<T*>(q.data), q.shape, q.stride), seqs, opts,
                              /*host_lengths=*/false),
        cfg, opts);
  }
  T dummy{};
  const Tensor3<const T> v(&dummy, {k.shape[0], k.shape[1], 1}, {0, 0, 1});
  const Tensor3<T> out(&dummy, {q.shape[0], q.shape[1], 1}, {0, 0, 1});
  AttentionOptions o = opts;
  o.lse = nullptr;
  moba::detail::Prepared<T> pr{make_params_varlen<T>(q, k, v, out, seqs, o), {}, {}};
  return moba::detail::run_select(pr, cfg, means, o);
}

}  // namespace attnkit
