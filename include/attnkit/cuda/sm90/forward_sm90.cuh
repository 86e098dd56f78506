// The Hopper (sm_90a) prefill forward kernel: warpgroup MMA (wgmma) with
// shared-memory operands in the 128-byte-swizzled layout (wgmma.cuh),
// FlashAttention-3's math in a simpler shell:
//
//  * a CTA owns 128 query rows of one (batch, query head): two consumer
//    warpgroups of 64 rows each, 256 threads, one CTA per SM (configurable:
//    Sm90Config's warpgroups per CTA and CTAs per SM);
//  * every thread issues cp.async copies (no TMA, no producer warp): Q once,
//    then K and V tiles of kBlockN keys, two buffers each, zero-filled past
//    the valid lengths; the key tiles the mask leaves empty are never loaded;
//  * S = Q K^T: wgmma m64 n kBlockN k16, A = Q and B = K from smem (K-major);
//    O += P V: wgmma m64 n D k16 with A = P from registers (the fp32 S
//    accumulators converted in place: the accumulator layout is the A
//    fragment layout) and B = V from smem (MN-major, transpose bit);
//  * intra-warpgroup overlap: S of the next tile and P V of this one are in
//    flight together, and the softmax of the next tile runs on the CUDA cores
//    while P V runs on the tensor cores. K of tile q + 2 and V of tile q + 1
//    load during iteration q (K tiles are consumed one iteration before V);
//  * online softmax in fp32 with exp2, scale folded into the exponent as in
//    forward_kernel.cuh; masks through the same tile classification: empty
//    tiles skipped, full tiles with no per-element predicate, partial tiles
//    by two compares per element where the mask has key_span (tile.hpp).
//
// Device code exists only where the consumer compiled sm_90a machine code
// (`__CUDA_ARCH_FEAT_SM90_ALL`); elsewhere the kernel body is a marker that
// sm90_ready() detects at run time, and the front door (dispatch.cuh) falls
// back to the mma.sync kernel. Prefill only (decode keeps split-KV), head
// dims 64 and 128, no ALiBi (those run on forward_kernel.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "attnkit/core/error.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/forward_kernel.cuh"
#include "attnkit/cuda/launch.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/cuda/sm90/wgmma.cuh"
#include "attnkit/mask/basic.hpp"
#include "attnkit/mask/tile.hpp"

namespace attnkit::cuda::sm90 {

// kWarpgroups_: consumer warpgroups per CTA (64 query rows each; they share
// every K/V tile). kMinBlocks_: CTAs per SM the register budget is cut for
// (__launch_bounds__): with one warpgroup per CTA, two or three independent
// CTAs per SM let one CTA's softmax overlap another's MMAs.
template <class T, int D_, int kBlockN_, int kWarpgroups_ = 2, int kMinBlocks_ = 1>
struct Sm90Config {
  using Elem = T;
  static constexpr int D = D_;
  static constexpr int kWarpgroups = kWarpgroups_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kBlockM = 64 * kWarpgroups;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kSmemQ = kBlockM * D * 2;
  static constexpr int kSmemKV = kBlockN * D * 2;  // one K or V tile
  // Q, two K buffers, two V buffers, the key-run summary's reduction (5
  // ints per warp), and slack to align the base to 1024.
  static constexpr int kSmemRed = 5 * 4 * (kThreads / 32);
  static constexpr int kSmemBytes = kSmemQ + 4 * kSmemKV + kSmemRed + 1024;
  static_assert(D == 64 || D == 128, "sm90 kernel: head dim 64 or 128");
  static_assert(kBlockN == 64 || kBlockN == 128, "sm90 kernel: key tile 64 or 128");
  static_assert(kWarpgroups == 1 || kWarpgroups == 2, "sm90 kernel: one or two consumer warpgroups");
};

template <class T>
struct Sm90Args {
  AttentionParams<T> p;
  float scale_log2 = 0.f;
  int m_blocks = 1;
};

template <class Cfg, class Mask>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    flash_fwd_sm90_kernel(const Sm90Args<typename Cfg::Elem> a, const Mask mask) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using T = typename Cfg::Elem;
  using Ops = cuda::detail::MmaOps<T>;
  using Wg = Mma<T, Cfg::kBlockN>;  // S = Q K^T: N = kBlockN
  using Wo = Mma<T, Cfg::D>;        // O += P V: N = D
  constexpr int D = Cfg::D, BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  constexpr int kNS = BN / 8;  // 8-column blocks of S per thread row pair
  constexpr int kNO = D / 8;
  constexpr int kCpr = D / 8;                 // 16-byte chunks per row
  constexpr int kRpp = Cfg::kThreads / kCpr;  // rows per copy pass (a multiple of 8)
  static_assert(BN % kRpp == 0 && BM % kRpp == 0, "copy passes must cover whole tiles");
  static_assert(kRpp % 8 == 0, "copy passes must keep the swizzle phase");

  extern __shared__ unsigned char smem_raw[];
  const uint32_t s_base = (cuda::detail::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = s_base, sK = sQ + Cfg::kSmemQ, sV = sK + 2 * Cfg::kSmemKV;

  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;

  const int mb = a.m_blocks - 1 - static_cast<int>(blockIdx.x);  // heavier (causal: later) row blocks first
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t hk = s.kv_head_of(h);
  const int q_len = static_cast<int>(cuda::detail::clamp_len(s.q_len(b), s.q_capacity));
  const int kv_len = static_cast<int>(cuda::detail::clamp_len(s.kv_len(b), s.kv_capacity));
  const int row_limit = s.varlen() ? q_len : static_cast<int>(s.q_capacity);
  const int r0 = mb * BM;
  if (r0 >= row_limit) return;
  const SeqCtx ctx = SeqCtx::make(b, h, q_len, kv_len, s.alignment);

  const int n_tiles = (kv_len + BN - 1) / BN;
  const int i_hi = r0 + BM < q_len ? r0 + BM : q_len;
  cuda::detail::TileClassifier<Mask> cls{mask, ctx, 1, r0, i_hi, kv_len, BN};
  // This warpgroup's rows, for the full / partial decision per tile.
  const int w_lo = r0 + wg * 64, w_hi = w_lo + 64 < q_len ? w_lo + 64 : q_len;
  const cuda::detail::TileClassifier<Mask> wcls{mask, ctx, 1, w_lo, w_hi, kv_len, BN};
  const int row0 = w_lo + warp * 16 + g;  // this thread's rows: row0, row0 + 8

  // Masks whose rows are one run of keys (has_key_span, mask/tile.hpp): the
  // two rows' runs, clipped to [0, kv_len) (rows past q_len: empty), found
  // once. They classify the CTA's tiles (SpanSummary: no mask call per tile)
  // and mask partial tiles by two compares per element; a thread whose rows
  // both contain a tile's keys skips the compares. A row the mask declines
  // (false) falls back to the classifier and the predicate.
  constexpr bool kSpans = has_key_span<Mask>::value;
  [[maybe_unused]] int span_lo[2] = {0, 0}, span_hi[2] = {0, 0};
  [[maybe_unused]] bool span_ok[2] = {true, true};
  if constexpr (kSpans && key_span_is_arithmetic<Mask>::value) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
      span_ok[rr] = cuda::detail::clipped_key_span(mask, ctx, row0 + 8 * rr, q_len, kv_len, span_lo[rr], span_hi[rr]);
  } else if constexpr (kSpans) {
    // Runs that read memory (binary searches): one row per lane (lanes 16-31
    // repeat 0-15), then each thread takes its rows' runs from lanes g, g + 8.
    int lo = 0, hi = 0;
    const int ok = cuda::detail::clipped_key_span(mask, ctx, w_lo + warp * 16 + lane % 16, q_len, kv_len, lo, hi);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      span_lo[rr] = __shfl_sync(0xffffffffu, lo, g + 8 * rr);
      span_hi[rr] = __shfl_sync(0xffffffffu, hi, g + 8 * rr);
      span_ok[rr] = __shfl_sync(0xffffffffu, ok, g + 8 * rr) != 0;
    }
  }

  int n_first = n_tiles, n_last = -1;
  if (r0 < i_hi && n_tiles > 0) {
    // (Arithmetic runs: the mask's own classify is as cheap, and the
    // summary's registers would spill at D = 64.)
    if constexpr (kSpans && !key_span_is_arithmetic<Mask>::value) {
      cuda::detail::SpanSummary mine = cuda::detail::SpanSummary::none(kv_len);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) mine.add(span_lo[rr], span_hi[rr], row0 + 8 * rr < q_len, span_ok[rr]);
      int* red = reinterpret_cast<int*>(smem_raw + (s_base - cuda::detail::smem_addr(smem_raw)) + Cfg::kSmemQ +
                                        4 * Cfg::kSmemKV);
      const cuda::detail::SpanSummary all = cuda::detail::cta_span_summary(mine, red, Cfg::kThreads / 32);
      if (all.ok) cls.use_spans = true, cls.spans = all;
    }
    TileKind k0 = TileKind::Partial;
    n_first = cls.first_nonempty(0, n_tiles, k0);
    if (n_first < n_tiles) n_last = static_cast<int>(cls.last_nonempty(n_first, n_tiles));
  }
  auto next_tile = [&](int n) {
    TileKind k = TileKind::Partial;
    return n < n_last ? cls.first_nonempty(n + 1, n_last + 1, k) : n_last + 1;
  };

  const bool softcap = p.softcap > 0.f;
  const bool transform = softcap || !(a.scale_log2 > 0.f);
  const float sl = transform ? 1.f : a.scale_log2;
  const float cap_inv_scale = softcap ? p.scale / p.softcap : 0.f;
  const float cap_log2 = p.softcap * cuda::detail::kLog2e;

  const int64_t kv_start = s.kv_start(b);
  const T* k_base = p.k + (s.varlen() ? 0 : b * p.k_layout.batch_stride) + kv_start * p.k_layout.row_stride +
                    hk * p.k_layout.head_stride;
  const T* v_base = p.v + (s.varlen() ? 0 : b * p.v_layout.batch_stride) + kv_start * p.v_layout.row_stride +
                    hk * p.v_layout.head_stride;

  // Copies (copy_rows_async): thread -> (row tid / kCpr + pass * kRpp, chunk
  // tid % kCpr); its swizzled smem offset is one constant per thread (kRpp
  // keeps row % 8).
  auto load_kv = [&](uint32_t dst, const T* base, int64_t row_stride, int n) {
    cuda::detail::copy_rows_async<Cfg::kThreads, BN, kCpr, cuda::detail::Sw128Tile<BN>>(dst, base, row_stride, n * BN,
                                                                                        kv_len, tid);
  };

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float row_max[2] = {cuda::detail::neg_inf(), cuda::detail::neg_inf()}, row_sum[2] = {0.f, 0.f};

  if (n_first <= n_last) {
    float sc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) sc[i] = 0.f;
    uint32_t pf[BN / 16][4];

    const uint64_t dq = make_desc(sQ + wg * 64 * 128, 16, 1024);
    const uint64_t dk = make_desc(sK, 16, 1024);
    const uint64_t dv = make_desc(sV, BN * 128, 1024);
    auto issue_qk = [&](int buf) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        // Descriptor start addresses are in 16-byte units (bits 0-13).
        const uint64_t da = dq + (((kk / 4) * BM * 128 + (kk % 4) * 32) >> 4);
        const uint64_t db = dk + ((buf * Cfg::kSmemKV + (kk / 4) * BN * 128 + (kk % 4) * 32) >> 4);
        Wg::ss(sc, da, db, kk > 0 ? 1 : 0);
      }
    };
    auto issue_pv = [&](int buf) {
#pragma unroll
      for (int kc = 0; kc < BN / 16; ++kc) {
        const uint64_t db = dv + ((buf * Cfg::kSmemKV + kc * 16 * 128) >> 4);
        Wo::template rs<1>(o, pf[kc], db, 1);
      }
    };
    // Logit transform, mask, online softmax of one S tile (into P values in
    // sc); returns the rescale factors of the two rows.
    auto softmax = [&](int n, float(&corr)[2]) {
      const int j_tile = n * BN;
      if (transform) {
#pragma unroll
        for (int e = 0; e < BN / 2; ++e) {
          const float x = sc[e];
          sc[e] = softcap ? cap_log2 * tanhf(x * cap_inv_scale) : x * a.scale_log2;
        }
      }
      bool both_spans = false;
      if constexpr (kSpans) both_spans = span_ok[0] && span_ok[1];
      if (both_spans) {
        // Compares only where some key of the tile is outside a row's run.
        const int lo = span_lo[0] > span_lo[1] ? span_lo[0] : span_lo[1];
        const int hi = span_hi[0] < span_hi[1] ? span_hi[0] : span_hi[1];
        if (j_tile < lo || j_tile + BN > hi) {
#pragma unroll
          for (int i = 0; i < kNS; ++i)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const int rr = c >> 1, j = j_tile + 8 * i + 2 * t + (c & 1);
              if (j < span_lo[rr] || j >= span_hi[rr]) sc[4 * i + c] = cuda::detail::neg_inf();
            }
        }
      } else if (const TileKind kind = w_lo < w_hi ? wcls.range(n, n + 1) : TileKind::Empty;
                 kind != TileKind::Full || j_tile + BN > kv_len) {
#pragma unroll
        for (int i = 0; i < kNS; ++i)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int rr = c >> 1, row = row0 + 8 * rr;
            const int j = j_tile + 8 * i + 2 * t + (c & 1);
            bool ok = kind != TileKind::Empty && j < kv_len;  // full tiles: rows past q_len are never written
            if (ok && kind != TileKind::Full) {
              if constexpr (kSpans) {
                ok = span_ok[rr] ? (j >= span_lo[rr] && j < span_hi[rr]) : (row < q_len && mask(ctx, row, j));
              } else {
                ok = row < q_len && mask(ctx, row, j);
              }
            }
            if (!ok) sc[4 * i + c] = cuda::detail::neg_inf();
          }
      }
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float mx = cuda::detail::neg_inf();
#pragma unroll
        for (int i = 0; i < kNS; ++i) mx = fmaxf(mx, fmaxf(sc[4 * i + 2 * rr], sc[4 * i + 2 * rr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mx2 = fmaxf(row_max[rr], mx * sl);
        const float m_use = mx2 == cuda::detail::neg_inf() ? 0.f : mx2;
        corr[rr] = cuda::detail::exp2_approx(row_max[rr] - m_use);
        row_max[rr] = mx2;
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < kNS; ++i) {
          sc[4 * i + 2 * rr] = cuda::detail::exp2_approx(fmaf(sc[4 * i + 2 * rr], sl, -m_use));
          sc[4 * i + 2 * rr + 1] = cuda::detail::exp2_approx(fmaf(sc[4 * i + 2 * rr + 1], sl, -m_use));
          sum += sc[4 * i + 2 * rr] + sc[4 * i + 2 * rr + 1];
        }
        row_sum[rr] = row_sum[rr] * corr[rr] + sum;
      }
    };
    auto to_p = [&]() {
#pragma unroll
      for (int kc = 0; kc < BN / 16; ++kc) {
        pf[kc][0] = Ops::pack(sc[8 * kc + 0], sc[8 * kc + 1]);
        pf[kc][1] = Ops::pack(sc[8 * kc + 2], sc[8 * kc + 3]);
        pf[kc][2] = Ops::pack(sc[8 * kc + 4], sc[8 * kc + 5]);
        pf[kc][3] = Ops::pack(sc[8 * kc + 6], sc[8 * kc + 7]);
      }
    };

    // Prologue: group 0 = Q + K(first); group 1 = K(second) + V(first).
    {
      const T* q_base = p.q + (s.varlen() ? 0 : b * p.q_layout.batch_stride) + s.q_start(b) * p.q_layout.row_stride +
                        h * p.q_layout.head_stride;
      cuda::detail::copy_rows_async<Cfg::kThreads, BM, kCpr, cuda::detail::Sw128Tile<BM>>(
          sQ, q_base, p.q_layout.row_stride, r0, q_len, tid);
    }
    load_kv(sK, k_base, p.k_layout.row_stride, n_first);
    cuda::detail::cp_async_commit();
    int n_nx = next_tile(n_first);
    if (n_nx <= n_last) load_kv(sK + Cfg::kSmemKV, k_base, p.k_layout.row_stride, n_nx);
    load_kv(sV, v_base, p.v_layout.row_stride, n_first);
    cuda::detail::cp_async_commit();
    cuda::detail::cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
    float corr[2];
    reg_fence(sc);
    fence();
    issue_qk(0);
    commit();
    wait<0>();
    reg_fence(sc);
    softmax(n_first, corr);
    to_p();

    int buf = 0;  // buffer of the current tile's V (and of its K, already used)
    for (;;) {
      cuda::detail::cp_async_wait<0>();  // K(next), V(current)
      fence_proxy_async();
      __syncthreads();  // ... visible; K(current) and V(previous) free in every warpgroup
      if (n_nx > n_last) break;
      const int n_nx2 = next_tile(n_nx);
      if (n_nx2 <= n_last) load_kv(sK + buf * Cfg::kSmemKV, k_base, p.k_layout.row_stride, n_nx2);
      load_kv(sV + (buf ^ 1) * Cfg::kSmemKV, v_base, p.v_layout.row_stride, n_nx);
      cuda::detail::cp_async_commit();

      reg_fence(o);
      reg_fence(sc);
      fence();
      issue_qk(buf ^ 1);
      commit();
      issue_pv(buf);
      commit();
      wait<1>();  // S(next) done, P V(current) may still run
      reg_fence(sc);
      softmax(n_nx, corr);
      wait<0>();
      reg_fence(o);
      if (corr[0] != 1.f || corr[1] != 1.f) {
#pragma unroll
        for (int i = 0; i < kNO; ++i) {
          o[4 * i] *= corr[0];
          o[4 * i + 1] *= corr[0];
          o[4 * i + 2] *= corr[1];
          o[4 * i + 3] *= corr[1];
        }
      }
      to_p();
      n_nx = n_nx2;
      buf ^= 1;
    }
    // The last tile's P V.
    reg_fence(o);
    fence();
    issue_pv(buf);
    commit();
    wait<0>();
    reg_fence(o);
  }

  // Epilogue: finish the row sums across the quad, normalise, write.
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float l = row_sum[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int i = row0 + 8 * rr;
    if (i >= row_limit) continue;
    const bool empty = i >= q_len || row_max[rr] == cuda::detail::neg_inf() || !(l > 0.f);
    const float lse = empty ? cuda::detail::neg_inf() : (row_max[rr] + __log2f(l)) * cuda::detail::kLn2;
    float denom = l;
    if (p.sink_logits && !empty)
      denom += cuda::detail::exp2_approx(p.sink_logits[h] * cuda::detail::kLog2e - row_max[rr]);
    const float inv = empty ? 0.f : 1.f / denom;
    T* dst = p.out_row(b, i, h);
#pragma unroll
    for (int nd = 0; nd < kNO; ++nd)
      *reinterpret_cast<uint32_t*>(dst + nd * 8 + 2 * t) =
          Ops::pack(o[4 * nd + 2 * rr] * inv, o[4 * nd + 2 * rr + 1] * inv);
    if (t == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
  }
#else
  // Not sm_90a machine code: a static shared-memory marker that sm90_ready()
  // reads through cudaFuncGetAttributes. Never launched.
  (void)mask;
  __shared__ float sm90_unavailable[2];
  if (blockDim.x == 0) {
    sm90_unavailable[threadIdx.x & 1] = 1.f;
    __syncthreads();
    a.p.lse[0] = sm90_unavailable[(threadIdx.x + 1) & 1];
  }
#endif
}

namespace detail {

// True when this device is compute capability 9.0 and the kernel's running
// code is sm_90a machine code (no marker), once per kernel and device. A
// header-only library cannot know at compile time which targets its
// consumer built.
template <class Kernel>
bool kernel_ready(Kernel k) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, bool> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(k), dev);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int major = 0, minor = 0;
  bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
            minor == 0;
  if (ok) {
    cudaFuncAttributes attr{};
    ok = cudaFuncGetAttributes(&attr, k) == cudaSuccess && attr.sharedSizeBytes == 0;
  }
  (void)cudaGetLastError();
  cache.emplace(key, ok);
  return ok;
}

}  // namespace detail

// Whether configuration Cfg with this mask type can run here (see above).
template <class Cfg, class Mask>
bool sm90_ready() {
  return detail::kernel_ready(flash_fwd_sm90_kernel<Cfg, Mask>);
}

// One prefill call on the sm90 kernel, configuration Cfg. Throws if it cannot
// run here (sm90_ready), or if the problem is outside its scope.
template <class Cfg, class T, class Mask>
void forward_sm90_with(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  constexpr float kLog2e = 1.4426950408889634f;
  const ProblemShape& s = p.shape;
  if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
  attnkit::detail::require(s.head_dim == Cfg::D && s.v_head_dim == Cfg::D, "head_dim", s.head_dim,
                           "must match the sm90 configuration's head dim (Dv == D)");
  if (p.alibi_slopes) attnkit::detail::fail("the sm90 kernel has no ALiBi; use the mma.sync kernel (forward_hdim)");
  attnkit::detail::require(s.q_capacity < (int64_t(1) << 31), "q_capacity", s.q_capacity, "must be < 2^31 on the GPU");
  attnkit::detail::require(s.kv_capacity < (int64_t(1) << 31), "kv_capacity", s.kv_capacity,
                           "must be < 2^31 on the GPU");
  auto kernel = flash_fwd_sm90_kernel<Cfg, Mask>;
  if (!detail::kernel_ready(kernel))
    attnkit::detail::fail(
        "the sm90 kernel needs a compute capability 9.0 device and sm_90a machine code in the binary "
        "(-gencode=arch=compute_90a,code=sm_90a)");
  Sm90Args<T> a;
  a.p = p;
  a.scale_log2 = p.scale * kLog2e;
  a.m_blocks = static_cast<int>((s.q_capacity + Cfg::kBlockM - 1) / Cfg::kBlockM);
  cuda::detail::allow_smem(kernel, Cfg::kSmemBytes, cuda::detail::current_device());
  const dim3 grid(static_cast<unsigned>(a.m_blocks), static_cast<unsigned>(s.q_heads), static_cast<unsigned>(s.batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, mask);
  cuda::detail::check_launch("flash_fwd_sm90_kernel");
}

// The configuration the front door uses per head dim and mask type (H100,
// bench/cuda/NOTES-sm90.md step 3: CTAs per SM is the lever, not the key
// tile). D = 128: one warpgroup per CTA, 64-key tiles, two CTAs per SM (one
// CTA's softmax overlaps the other's MMAs): 475 / 392 TFLOP/s full / causal
// at B8 N4096 vs 438 / 369 for two lock-stepped warpgroups. D = 64: two
// warpgroups, 64-key tiles, registers capped for two CTAs per SM: causal 308
// vs 252 (full: 403, the same as uncapped, which compiles to 128 anyway).
template <class T, int D, class Mask>
using Sm90Default = std::conditional_t<D == 128, Sm90Config<T, D, 64, 1, 2>, Sm90Config<T, D, 64, 2, 2>>;

// Whether a call goes to the sm90 kernel: prefill, head dim D == Dv, no
// ALiBi, sm_90a code on a 9.0 device. D is the call's head dim, fixed at
// compile time. The front door asks exactly this (try_forward_sm90_hdim).
template <int D, class T, class Mask>
bool sm90_applies(const AttentionParams<T>& p) {
  const ProblemShape& s = p.shape;
  if constexpr (D == 64 || D == 128) {
    if (s.q_capacity <= kDecodeMaxQueries || p.alibi_slopes || s.head_dim != D || s.v_head_dim != D) return false;
    return sm90_ready<Sm90Default<T, D, Mask>, Mask>();
  } else {
    (void)s;
    return false;
  }
}

// Runs the call on the sm90 kernel when sm90_applies and returns true; else
// returns false and launches nothing.
template <int D, class T, class Mask>
bool try_forward_sm90_hdim(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  if constexpr (D == 64 || D == 128) {
    if (!sm90_applies<D, T, Mask>(p)) return false;
    forward_sm90_with<Sm90Default<T, D, Mask>>(p, mask, stream);
    return true;
  } else {
    (void)p, (void)mask, (void)stream;
    return false;
  }
}

// The same with the head dim chosen at run time.
template <class T, class Mask>
bool try_forward_sm90(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  if (p.shape.head_dim == 64) return try_forward_sm90_hdim<64>(p, mask, stream);
  if (p.shape.head_dim == 128) return try_forward_sm90_hdim<128>(p, mask, stream);
  return false;
}

}  // namespace attnkit::cuda::sm90
