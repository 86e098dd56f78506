// The tensor-core flash-attention forward kernel (FlashAttention-2 design),
// one template for prefill and split-KV decode:
//
//  * a CTA owns kBlockM "packed rows" of one (batch, head group); each warp
//    owns 16 * kMTiles of them, so every K/V fragment read from smem feeds
//    kMTiles mma's; Q fragments stay in registers where they fit;
//  * K and V tiles of kBlockN keys stream through shared memory with cp.async
//    in a two-stage pipeline: tile n is computed while the next non-empty
//    tile loads (one barrier wait per tile);
//  * smem rows are padded by 16 bytes, so the 8 rows an ldmatrix phase reads
//    fall in 8 distinct 16-byte bank groups (conflict-free for every head dim,
//    where a 3-bit XOR swizzle would not fit D = 96);
//  * online softmax in fp32 with exp2 and log2(e) folded into the scale;
//  * the mask is a template functor: each key tile is classified first, empty
//    tiles are never loaded, full tiles skip the per-element predicate.
//
// Packed rows: with group_pack = G > 1 (decode), packed row r is query row
// r / G of query head h0 + r % G, so the G query heads of a GQA group share
// every K/V tile a CTA loads. With G = 1 it is plain row r of one head.
//
// Fused RoPE (Cfg::kRope, rope_fused.cuh): Q rows are rotated in smem once
// per CTA, each K tile in place after it lands and before the QK^T mma's.
// ReRoPE / Leaky ReRoPE (RopeKind::Relative) keep far-rotated copies of Q and
// of the K tile in extra smem; a tile whose distances p - j are all <= w
// (or all > w) computes one score set, a tile straddling w computes both and
// keeps one per pair by distance. RopeKind::None compiles none of it.
//
// Split-KV: with num_splits > 1 the CTA covers key tiles
// [split * tiles_per_split, ...) and writes an fp32 partial (out normalised by
// its own sum, natural-log LSE without the sink), merged by merge_splits_kernel
// after this launch (the default) or, with tickets (DecodeTuning::
// in_kernel_merge), inside it: the last CTA of a work unit (batch, head group,
// row block) to finish, found by an atomic ticket that resets itself, merges
// every split of the unit's rows (merge_kernel.cuh), one launch per call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/core/fast_divmod.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/merge_kernel.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/cuda/rope_fused.cuh"
#include "attnkit/cuda/tile_classifier.cuh"
#include "attnkit/mask/tile.hpp"
#include "attnkit/mask/traits.hpp"

namespace attnkit::cuda {

// Compile-time shape of one kernel instantiation.
// kPack_: the kernel may pack a GQA group's heads into its rows (decode,
// group_pack G > 1). Prefill configurations set it false: rows are then
// plain query rows of one head, and the per-row (query, head) bookkeeping
// compiles away (it cost registers that 2 m-tiles per warp need).
// kRope_: fused RoPE policy (None: the plain kernel; Relative: Q is re-read
// from smem and far copies of Q and K take kSmemQ + kSmemKV more smem).
template <class T, int D_, int kWarps_, int kMTiles_, int kBlockN_, bool kPack_ = true,
          RopeKind kRope_ = RopeKind::None>
struct FwdConfig {
  using Elem = T;
  static constexpr bool kPack = kPack_;
  static constexpr RopeKind kRope = kRope_;
  static constexpr int D = D_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kMTiles = kMTiles_;  // 16-row m-tiles per warp: K/V fragments are reused across them
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kMTiles * kWarps;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStride = D + 8;  // padded smem row, elements
  // Q fragments cost D/4 registers per thread; past D = 128 they would push
  // the accumulators into local memory, so D = 256 re-reads Q from smem.
  static constexpr bool kQInRegs = D * kMTiles <= 128 && kRope_ != RopeKind::Relative;
  static constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
  static constexpr int kSmemQ = kBlockM * kStride * 2;
  static constexpr int kSmemKV = kBlockN * kStride * 2;
  static constexpr int kStages = 2;                                                     // (K, V) tile buffers in flight
  static constexpr int kSmemFar = kRope_ == RopeKind::Relative ? kSmemQ + kSmemKV : 0;  // far Q, far K tile
  static constexpr int kSmemBytes = kSmemQ + kStages * 2 * kSmemKV + kSmemFar;
  static_assert(D % 32 == 0 || D == 96, "head dim must be 64, 96, 128 or 256");
  static_assert(kBlockN % 16 == 0, "key tile must be a multiple of 16");
};

// Everything a launch needs besides the mask (kernel parameters, by value).
template <class T>
struct FwdArgs {
  AttentionParams<T> p;
  float scale_log2 = 0.f;  // scale * log2(e)
  int group_pack = 1;      // G: query heads per packed row block
  int m_blocks = 1;        // packed row blocks per (batch, head group)
  FastDivmod group_div;    // by group_pack, and by m_blocks: set by launch_fwd
  FastDivmod mblock_div;
  int num_splits = 1;  // key-range splits (1 = write out directly)
  int64_t tiles_per_split = 0;
  float* ws_out = nullptr;  // [splits, rows, Hq, D] fp32 partials
  float* ws_lse = nullptr;  // [splits, rows, Hq]
  int64_t ws_rows = 0;      // padded: B * Sq, varlen: total_q
  // Tickets per work unit (B x head groups x m_blocks), zero before the
  // launch; the last CTA to take one leaves it zero again (take_last_ticket).
  // nullptr: the kernel writes partials only (a merge kernel runs after it).
  unsigned* ws_count = nullptr;
  // Splits merged together first (two-level merge) when < num_splits; the
  // tickets are then units x (chunks + 1).
  int split_chunk = 1 << 30;
  FusedRope rope;  // read only by RoPE configurations
};

namespace detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// Valid length clamped to the capacity: device-resident lengths were never
// seen by the host, and a bad one must not turn into an out-of-bounds access.
__device__ __forceinline__ int64_t clamp_len(int64_t n, int64_t cap) { return n < 0 ? 0 : (n > cap ? cap : n); }

// Row-major smem tile of kStride elements per row (rows padded past the head
// dim: conflict-free ldmatrix), for copy_rows_async: the byte offset of
// element `col` of row `r`; rows kRowPeriod apart are kRowBytes apart.
template <int kStride>
struct PaddedTile {
  static constexpr int kRowPeriod = 1;
  static constexpr int kRowBytes = kStride * 2;
  __device__ static uint32_t offset(int r, int col) { return static_cast<uint32_t>((r * kStride + col) * 2); }
};

// Rows [j0, j0 + kRows) of one head (row_stride elements apart, from
// `base`) into smem at `dst`, placed by Layout (PaddedTile above, Sw128Tile
// in tma.cuh), 16 bytes per cp.async, by kLanes threads (`lane` in
// [0, kLanes)); rows at or past `valid` are zero-filled. When a pass of the
// threads covers whole rows and keeps each thread's row within the layout's
// period, each thread copies rows r, r + kLanes / kChunksPerRow, ... through
// one pointer advanced by a fixed stride (compile-time smem offsets past one
// per-thread base); otherwise chunk by chunk. The K/V tile copy of every
// kernel that copies with cp.async. kUnrollChunks = false leaves the
// chunk-by-chunk loop's unrolling to the compiler (a fallback path that
// should not grow the code).
template <int kLanes, int kRows, int kChunksPerRow, class Layout, bool kUnrollChunks = true, class T>
__device__ __forceinline__ void copy_rows_async(uint32_t dst, const T* base, int64_t row_stride, int j0, int valid,
                                                int lane) {
  constexpr int kRowsPerPass = kLanes / kChunksPerRow;
  constexpr bool kRowPasses = kLanes % kChunksPerRow == 0 && kRowsPerPass > 0 && kRows % kRowsPerPass == 0 &&
                              kRowsPerPass % Layout::kRowPeriod == 0;
  if constexpr (kRowPasses) {
    const int ld_row = lane / kChunksPerRow, ld_col = (lane % kChunksPerRow) * 8;
    const T* src = base + static_cast<int64_t>(j0 + ld_row) * row_stride + ld_col;
    const int rows_ok = valid - j0 - ld_row;
    dst += Layout::offset(ld_row, ld_col);
#pragma unroll
    for (int rp = 0; rp < kRows; rp += kRowsPerPass) {
      const bool ok = rp < rows_ok;
      cp_async_16(dst + rp / Layout::kRowPeriod * Layout::kRowBytes, ok ? src : base, ok);
      src += kRowsPerPass * row_stride;
    }
  } else {
    const T* tile = base + static_cast<int64_t>(j0) * row_stride;
    const int rows_ok = valid - j0;
    auto chunk = [&](int c) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const bool ok = r < rows_ok;
      cp_async_16(dst + Layout::offset(r, col), ok ? tile + r * row_stride + col : base, ok);
    };
    if constexpr (kUnrollChunks) {
#pragma unroll
      for (int c = lane; c < kRows * kChunksPerRow; c += kLanes) chunk(c);
    } else {
      for (int c = lane; c < kRows * kChunksPerRow; c += kLanes) chunk(c);
    }
  }
}

// The CTA's kRows packed query rows into smem at `dst` (kStride elements per
// row) by kThreads threads, 16 bytes per cp.async: packed row r is query
// (r0 + r) / G of head h0 + (r0 + r) % G, zero past q_len. The Q load of
// both mma.sync kernels.
template <int kThreads, int kRows, int kChunksPerRow, int kStride, class T>
__device__ __forceinline__ void copy_packed_q_async(uint32_t dst, const AttentionParams<T>& p, int64_t b, int r0,
                                                    const FastDivmod& G, int64_t h0, int q_len, int tid) {
  const ProblemShape& s = p.shape;
  const T* q_base = p.q + (s.varlen() ? 0 : b * p.q_layout.batch_stride) + s.q_start(b) * p.q_layout.row_stride;
  // A fixed count per thread (tid < kThreads): no loop for the compiler to
  // unroll by four behind a remainder check.
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int k = 0; k < (kChunks + kThreads - 1) / kThreads; ++k) {
    const int c = tid + k * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const int pr = r0 + r, i = G.div(pr);
    const int64_t h = h0 + G.mod(pr, i);
    const bool ok = i < q_len;
    const T* src = ok ? q_base + i * p.q_layout.row_stride + h * p.q_layout.head_stride + col : p.q;
    cp_async_16(dst + (r * kStride + col) * 2, src, ok);
  }
}

}  // namespace detail

template <class Cfg, class Mask>
__global__ void __launch_bounds__(Cfg::kThreads)
    flash_fwd_kernel(const FwdArgs<typename Cfg::Elem> a, const Mask mask) {
  using T = typename Cfg::Elem;
  using Ops = detail::MmaOps<T>;
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kStride = Cfg::kStride;
  constexpr int kThreads = Cfg::kThreads, kMT = Cfg::kMTiles;
  constexpr int kR = 2 * kMT;       // rows per thread: g and g + 8 of each 16-row m-tile
  constexpr int kNS = kBlockN / 8;  // 8-key column blocks of S
  constexpr int kNO = D / 8;        // 8-wide column blocks of O

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Shared-window byte addresses: Q, then kStages (K, V) tile buffers.
  const uint32_t sQ = detail::smem_addr(smem_raw);
  const uint32_t sKV = sQ + Cfg::kSmemQ;

  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;

  // Heavier row blocks (causal: the last ones) first. Row, key and tile
  // indices are 32-bit (the host checks capacities < 2^31 / G); pointer
  // offsets stay 64-bit.
  const int split = a.mblock_div.div(static_cast<int>(blockIdx.x));
  const int mb = a.m_blocks - 1 - a.mblock_div.mod(static_cast<int>(blockIdx.x), split);
  const int G = Cfg::kPack ? a.group_pack : 1;
  const FastDivmod gdiv = Cfg::kPack ? a.group_div : FastDivmod();  // divides by G
  const int64_t b = blockIdx.z;
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * G;  // first query head of the CTA
  const int64_t hk = s.kv_head_of(h0);

  const int q_len = static_cast<int>(detail::clamp_len(s.q_len(b), s.q_capacity));
  const int kv_len = static_cast<int>(detail::clamp_len(s.kv_len(b), s.kv_capacity));
  const int row_limit = s.varlen() ? q_len : static_cast<int>(s.q_capacity);  // rows this call must write
  const int r0 = mb * kBlockM;                                                // first packed row
  if (r0 >= row_limit * G) return;

  const SeqCtx ctx0 = SeqCtx::make(b, h0, q_len, kv_len, s.alignment);

  // This thread's rows: query row and head (- h0) of each. Without packing
  // they are one base plus compile-time offsets.
  const int row_base = r0 + warp * 16 * kMT + g;
  int pk_i[Cfg::kPack ? kR : 1], pk_dh[Cfg::kPack ? kR : 1];
  if constexpr (Cfg::kPack) {
#pragma unroll
    for (int rr = 0; rr < kR; ++rr) {
      const int r = row_base + (rr / 2) * 16 + (rr % 2) * 8;
      pk_i[rr] = gdiv.div(r);
      pk_dh[rr] = gdiv.mod(r, pk_i[rr]);
    }
  }
  auto row_i = [&](int rr) -> int {
    if constexpr (Cfg::kPack)
      return pk_i[rr];
    else
      return row_base + (rr / 2) * 16 + (rr % 2) * 8;
  };
  auto row_dh = [&](int rr) -> int {
    if constexpr (Cfg::kPack)
      return pk_dh[rr];
    else
      return 0 * rr;
  };

  // Key tiles to visit: the split's range, trimmed to the mask's non-empty span.
  const int i_lo = gdiv.div(r0);
  const int i_hi = gdiv.div(r0 + kBlockM - 1) + 1 < q_len ? gdiv.div(r0 + kBlockM - 1) + 1 : q_len;
  const int n_tiles = (kv_len + kBlockN - 1) / kBlockN;
  const detail::TileClassifier<Mask> cls{mask, ctx0, G, i_lo, i_hi, kv_len, kBlockN};
  int n_first = 0, n_last = -1;
  TileKind kind_first = TileKind::Partial;
  cls.split_tiles(split, a.num_splits, static_cast<int>(a.tiles_per_split), n_tiles, n_first, n_last, kind_first);

  const bool softcap = p.softcap > 0.f;
  // Logit transform before the softmax (else the scale folds into exp2's FFMA,
  // which needs scale > 0 for max(raw) to be max(scaled)).
  const bool transform = softcap || p.alibi_slopes || !(a.scale_log2 > 0.f);
  const float sl = transform ? 1.f : a.scale_log2;
  const float cap_inv_scale = softcap ? p.scale / p.softcap : 0.f;
  const float cap_log2 = p.softcap * detail::kLog2e;

  const int64_t kv_start = s.kv_start(b);
  const T* k_base = p.k + (s.varlen() ? 0 : b * p.k_layout.batch_stride) + kv_start * p.k_layout.row_stride +
                    hk * p.k_layout.head_stride;
  const T* v_base = p.v + (s.varlen() ? 0 : b * p.v_layout.batch_stride) + kv_start * p.v_layout.row_stride +
                    hk * p.v_layout.head_stride;

  // Fused RoPE: positions of query row i and key j (explicit arrays or the
  // alignment rule), and the far copies' smem (Relative) after the K/V stages.
  constexpr RopeKind kRope = Cfg::kRope;
  [[maybe_unused]] auto q_pos = [&](int i) -> int64_t { return p.q_positions ? p.q_position(b, i) : ctx0.pos(i); };
  [[maybe_unused]] auto k_pos = [&](int j) -> int64_t { return p.kv_positions ? p.kv_position(b, j) : j; };
  [[maybe_unused]] const int far_off = Cfg::kSmemQ + Cfg::kStages * 2 * Cfg::kSmemKV;  // bytes: far Q, then far K
  [[maybe_unused]] T* const q_far_s = reinterpret_cast<T*>(smem_raw + far_off);
  [[maybe_unused]] T* const k_far_s = reinterpret_cast<T*>(smem_raw + far_off + Cfg::kSmemQ);

  // One K or V tile; rows past kv_len are zero-filled.
  auto load_kv = [&](uint32_t dst, const T* base, int64_t row_stride, int n) {
    detail::copy_rows_async<kThreads, kBlockN, Cfg::kChunksPerRow, detail::PaddedTile<kStride>>(
        dst, base, row_stride, n * kBlockN, kv_len, tid);
  };

  // Masks whose rows are one run of keys (has_key_span) are checked on
  // partial tiles by two compares per element against the rows' runs,
  // clipped to [0, kv_len) (rows past q_len: empty). Arithmetic runs
  // (causal, window, prefix...) are recomputed per partial tile: keeping them
  // live across the loop costs spills in a kernel at 255 registers. Runs that
  // read memory (a document mask's binary search) are found once, at the
  // first partial tile, and kept. A row the mask declines falls back to the
  // predicate.
  constexpr bool kSpans = has_key_span<Mask>::value;
  constexpr bool kKeepSpans = kSpans && !key_span_is_arithmetic<Mask>::value;
  [[maybe_unused]] auto row_span = [&](int rr, int& lo_out, int& hi_out) -> bool {
    if constexpr (kSpans) {
      SeqCtx cr = ctx0;
      cr.head = h0 + row_dh(rr);
      return detail::clipped_key_span(mask, cr, row_i(rr), q_len, kv_len, lo_out, hi_out);
    } else {
      lo_out = hi_out = 0;
      return true;
    }
  };
  [[maybe_unused]] int kept_lo[kKeepSpans ? kR : 1], kept_hi[kKeepSpans ? kR : 1];
  [[maybe_unused]] bool kept_ok = false, kept_found = false;

  float o[kMT][kNO][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int i = 0; i < kNO; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float row_max[kR], row_sum[kR];
#pragma unroll
  for (int rr = 0; rr < kR; ++rr) row_max[rr] = detail::neg_inf(), row_sum[rr] = 0.f;

  if (n_first <= n_last) {
    // Q rows (zero past q_len) and the first K tile.
    detail::copy_packed_q_async<kThreads, kBlockM, Cfg::kChunksPerRow, kStride>(sQ, p, b, r0, gdiv, h0, q_len, tid);
    // Two-stage pipeline: tile n computes from one (K, V) buffer while the
    // next non-empty tile loads into the other. One commit group per tile
    // (empty groups too, so wait_group<1> always means "tile n has landed").
    auto load_tile = [&](int stage, int n) {
      load_kv(sKV + stage * 2 * Cfg::kSmemKV, k_base, p.k_layout.row_stride, n);
      load_kv(sKV + stage * 2 * Cfg::kSmemKV + Cfg::kSmemKV, v_base, p.v_layout.row_stride, n);
    };
    load_tile(0, n_first);
    detail::cp_async_commit();
    TileKind kind = kind_first, kind_next = TileKind::Partial;
    int n_next = cls.first_nonempty(n_first + 1, n_last + 1, kind_next);
    if (n_next <= n_last) load_tile(1, n_next);
    detail::cp_async_commit();

    uint32_t qf[Cfg::kQInRegs ? kMT : 1][Cfg::kQInRegs ? D / 16 : 1][4];
    // Per-thread ldmatrix base addresses (see mma.cuh for the lane -> row map).
    const uint32_t q_warp = sQ + ((warp * 16 * kMT + (lane % 16)) * kStride + (lane / 16) * 8) * 2;
    const uint32_t k_lane = (((lane % 8) + 8 * (lane / 16)) * kStride + 8 * ((lane / 8) % 2)) * 2;
    const uint32_t v_lane = (((lane % 8) + 8 * ((lane / 8) % 2)) * kStride + 8 * (lane / 16)) * 2 + Cfg::kSmemKV;

    // Relative RoPE: this thread's query positions (for the per-pair choice).
    [[maybe_unused]] int64_t qpos_r[kRope == RopeKind::Relative ? kR : 1];
    if constexpr (kRope == RopeKind::Relative) {
#pragma unroll
      for (int rr = 0; rr < kR; ++rr) qpos_r[rr] = row_i(rr) < q_len ? q_pos(row_i(rr)) : 0;
    }

    int stage = 0;
    for (int n = n_first; n <= n_last;) {
      const uint32_t k_frag = sKV + stage * 2 * Cfg::kSmemKV + k_lane;
      const uint32_t v_frag = sKV + stage * 2 * Cfg::kSmemKV + v_lane;
      detail::cp_async_wait<1>();
      __syncthreads();  // tile n (and Q) visible to every warp
      // Relative RoPE: which score sets this tile needs (0 near, 1 far, 2 both),
      // from the ranges of its distances; explicit positions always take both.
      [[maybe_unused]] int branch = 2;
      if constexpr (kRope == RopeKind::Relative) {
        if (!p.q_positions && !p.kv_positions) {
          const int kmin = n * kBlockN, kmax = (n * kBlockN + kBlockN < kv_len ? n * kBlockN + kBlockN : kv_len) - 1;
          if (static_cast<double>(ctx0.pos(i_hi - 1) - kmin) <= a.rope.window)
            branch = 0;
          else if (static_cast<double>(ctx0.pos(i_lo) - kmax) > a.rope.window)
            branch = 1;
        }
      }
      if constexpr (kRope != RopeKind::None) {
        // Rotate Q (first tile only) and this K tile in smem. Default
        // positions are consecutive along the rows (unpacked Q, K): the
        // recurrence form; packed Q rows and explicit positions: per row.
        T* q_s = reinterpret_cast<T*>(smem_raw);
        if (n == n_first) {
          if (G == 1 && !p.q_positions) {
            const int64_t pos0 = ctx0.pos(r0);
            if constexpr (kRope == RopeKind::Relative)
              detail::rope_rows_linear<T, D, kThreads, kBlockM, kStride>(a.rope, q_s, q_far_s, 1, pos0, tid, true);
            detail::rope_rows_linear<T, D, kThreads, kBlockM, kStride>(a.rope, q_s, q_s, 0, pos0, tid, false);
          } else {
            for (int r = warp; r < kBlockM; r += Cfg::kWarps) {
              const int i = gdiv.div(r0 + r);
              const int64_t qp = i < q_len ? q_pos(i) : 0;  // rows past q_len are zeros
              T* row = q_s + r * kStride;
              if constexpr (kRope == RopeKind::Relative)
                detail::rope_row<T, D>(a.rope, row, q_far_s + r * kStride, 1, qp, lane, true);
              detail::rope_row<T, D>(a.rope, row, row, 0, qp, lane, false);
            }
          }
        }
        T* k_s = reinterpret_cast<T*>(smem_raw + Cfg::kSmemQ + stage * 2 * Cfg::kSmemKV);
        if (!p.kv_positions) {
          const int64_t j0 = static_cast<int64_t>(n) * kBlockN;
          if constexpr (kRope == RopeKind::Relative) {
            if (branch != 0)
              detail::rope_rows_linear<T, D, kThreads, kBlockN, kStride>(a.rope, k_s, k_far_s, 2, j0, tid, true);
            if (branch != 1)
              detail::rope_rows_linear<T, D, kThreads, kBlockN, kStride>(a.rope, k_s, k_s, 0, j0, tid, false);
          } else {
            detail::rope_rows_linear<T, D, kThreads, kBlockN, kStride>(a.rope, k_s, k_s, 0, j0, tid, false);
          }
        } else {
          for (int r = warp; r < kBlockN; r += Cfg::kWarps) {
            const int j = n * kBlockN + r;
            const int64_t kp = j < kv_len ? k_pos(j) : 0;  // rows past kv_len are zeros
            T* row = k_s + r * kStride;
            if constexpr (kRope == RopeKind::Relative) {
              if (branch != 0) detail::rope_row<T, D>(a.rope, row, k_far_s + r * kStride, 2, kp, lane, true);
              if (branch != 1) detail::rope_row<T, D>(a.rope, row, row, 0, kp, lane, false);
            } else {
              detail::rope_row<T, D>(a.rope, row, row, 0, kp, lane, false);
            }
          }
        }
        __syncthreads();  // rotated rows visible to every warp
      }
      if constexpr (Cfg::kQInRegs) {
        if (n == n_first) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk)
              detail::ldmatrix_x4(qf[mt][kk], q_warp + (mt * 16 * kStride + kk * 16) * 2);
        }
      }
      // S = Q K^T: each K fragment feeds every m-tile of the warp.
      float sc[kMT][kNS][4];
      if constexpr (kRope == RopeKind::Relative) {
        // Q from smem (near or far copy), K near (in place) or far (k_far_s).
        auto qk = [&](float(&acc)[kMT][kNS][4], uint32_t q_addr, uint32_t k_addr) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int i = 0; i < kNS; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t af[kMT][4];
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) detail::ldmatrix_x4(af[mt], q_addr + (mt * 16 * kStride + kk * 16) * 2);
#pragma unroll
            for (int nb = 0; nb < kNS; nb += 2) {
              uint32_t bf[4];
              detail::ldmatrix_x4(bf, k_addr + (nb * 8 * kStride + kk * 16) * 2);
#pragma unroll
              for (int mt = 0; mt < kMT; ++mt) {
                Ops::mma(acc[mt][nb], af[mt], bf[0], bf[1]);
                Ops::mma(acc[mt][nb + 1], af[mt], bf[2], bf[3]);
              }
            }
          }
        };
        const uint32_t q_far = q_warp - sQ + detail::smem_addr(q_far_s);
        const uint32_t k_far = detail::smem_addr(k_far_s) + k_lane;
        if (branch == 1)
          qk(sc, q_far, k_far);
        else
          qk(sc, q_warp, k_frag);
        if (branch == 2) {
          float sf[kMT][kNS][4];
          qk(sf, q_far, k_far);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
              for (int c = 0; c < 4; ++c) {
                const int j = n * kBlockN + nb * 8 + 2 * t + (c & 1);
                const int64_t kp = j < kv_len ? k_pos(j) : 0;
                if (!(static_cast<double>(qpos_r[mt * 2 + (c >> 1)] - kp) <= a.rope.window))
                  sc[mt][nb][c] = sf[mt][nb][c];
              }
        }
      } else {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int i = 0; i < kNS; ++i) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t af[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            if constexpr (Cfg::kQInRegs) {
#pragma unroll
              for (int x = 0; x < 4; ++x) af[mt][x] = qf[mt][kk][x];
            } else {
              detail::ldmatrix_x4(af[mt], q_warp + (mt * 16 * kStride + kk * 16) * 2);
            }
          }
#pragma unroll
          for (int nb = 0; nb < kNS; nb += 2) {
            uint32_t bf[4];
            detail::ldmatrix_x4(bf, k_frag + (nb * 8 * kStride + kk * 16) * 2);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              Ops::mma(sc[mt][nb], af[mt], bf[0], bf[1]);
              Ops::mma(sc[mt][nb + 1], af[mt], bf[2], bf[3]);
            }
          }
        }
      }  // kRope != Relative

      // Logits. Plain scaling is folded into the exponent below (one FFMA per
      // element); softcap / ALiBi (or a non-positive scale) transform here into
      // log2 units first.
      const int j_tile = n * kBlockN;
      const bool need_check = kind != TileKind::Full || j_tile + kBlockN > kv_len;
      if (transform) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const int rr = mt * 2 + (c >> 1);
              const int j = j_tile + nb * 8 + 2 * t + (c & 1);
              float x = sc[mt][nb][c];
              x = softcap ? cap_log2 * tanhf(x * cap_inv_scale) : x * a.scale_log2;
              if (p.alibi_slopes && row_i(rr) < q_len)
                x += p.alibi_slopes[h0 + row_dh(rr)] * detail::kLog2e * static_cast<float>(j - ctx0.pos(row_i(rr)));
              sc[mt][nb][c] = x;
            }
      }
      bool spans_done = false;
      if constexpr (kSpans) {
        if (need_check) {
          int lo[kR], hi[kR];
          bool ok = true;
          if constexpr (kKeepSpans) {
            if (!kept_found) {
              kept_ok = true;
#pragma unroll
              for (int rr = 0; rr < kR; ++rr) kept_ok = row_span(rr, kept_lo[rr], kept_hi[rr]) && kept_ok;
              kept_found = true;
            }
#pragma unroll
            for (int rr = 0; rr < kR; ++rr) lo[rr] = kept_lo[rr], hi[rr] = kept_hi[rr];
            ok = kept_ok;
          } else {
#pragma unroll
            for (int rr = 0; rr < kR; ++rr) ok = row_span(rr, lo[rr], hi[rr]) && ok;
          }
          if (ok) {
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
              for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                  const int rr = mt * 2 + (c >> 1);
                  const int j = j_tile + nb * 8 + 2 * t + (c & 1);
                  if (j < lo[rr] || j >= hi[rr]) sc[mt][nb][c] = detail::neg_inf();
                }
            spans_done = true;
          }
        }
      }
      if (need_check && !spans_done) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              const int rr = mt * 2 + (c >> 1);
              const int j = j_tile + nb * 8 + 2 * t + (c & 1);
              bool ok = j < kv_len && row_i(rr) < q_len;
              if (ok && kind != TileKind::Full) {
                SeqCtx cr = ctx0;
                cr.head = h0 + row_dh(rr);
                ok = mask(cr, row_i(rr), j);
              }
              if (!ok) sc[mt][nb][c] = detail::neg_inf();
            }
      }

      // Online softmax: new running max, rescale what is accumulated.
#pragma unroll
      for (int rr = 0; rr < kR; ++rr) {
        const int mt = rr / 2, h2 = (rr % 2) * 2;
        float mx = detail::neg_inf();  // max of this tile, raw units
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb) mx = fmaxf(mx, fmaxf(sc[mt][nb][h2], sc[mt][nb][h2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // Running max in log2 units (row_max); sc is raw (x sl) until exp2.
        const float mx2 = fmaxf(row_max[rr], mx * sl);             // sl > 0: -inf stays -inf
        const float m_use = mx2 == detail::neg_inf() ? 0.f : mx2;  // all masked so far: keep zeros
        const float corr = detail::exp2_approx(row_max[rr] - m_use);
        row_max[rr] = mx2;
        float sum = 0.f;
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb) {
          sc[mt][nb][h2] = detail::exp2_approx(fmaf(sc[mt][nb][h2], sl, -m_use));
          sc[mt][nb][h2 + 1] = detail::exp2_approx(fmaf(sc[mt][nb][h2 + 1], sl, -m_use));
          sum += sc[mt][nb][h2] + sc[mt][nb][h2 + 1];
        }
        row_sum[rr] = row_sum[rr] * corr + sum;
        if (__any_sync(0xffffffffu, corr != 1.f)) {  // the max moved somewhere in the warp
#pragma unroll
          for (int nd = 0; nd < kNO; ++nd) {
            o[mt][nd][h2] *= corr;
            o[mt][nd][h2 + 1] *= corr;
          }
        }
      }

      // O += P V: two S column blocks form one A fragment of P; each V
      // fragment feeds every m-tile.
#pragma unroll
      for (int kc = 0; kc < kBlockN / 16; ++kc) {
        uint32_t pf[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          pf[mt][0] = Ops::pack(sc[mt][2 * kc][0], sc[mt][2 * kc][1]);
          pf[mt][1] = Ops::pack(sc[mt][2 * kc][2], sc[mt][2 * kc][3]);
          pf[mt][2] = Ops::pack(sc[mt][2 * kc + 1][0], sc[mt][2 * kc + 1][1]);
          pf[mt][3] = Ops::pack(sc[mt][2 * kc + 1][2], sc[mt][2 * kc + 1][3]);
        }
#pragma unroll
        for (int nd = 0; nd < kNO; nd += 2) {
          uint32_t bf[4];
          detail::ldmatrix_x4_trans(bf, v_frag + (kc * 16 * kStride + nd * 8) * 2);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            Ops::mma(o[mt][nd], pf[mt], bf[0], bf[1]);
            Ops::mma(o[mt][nd + 1], pf[mt], bf[2], bf[3]);
          }
        }
      }
      // Refill this stage with the tile after next once every warp is done with it.
      TileKind kind_after = TileKind::Partial;
      const int n_after = cls.first_nonempty(n_next + 1, n_last + 1, kind_after);
      __syncthreads();
      if (n_after <= n_last) load_tile(stage, n_after);
      detail::cp_async_commit();
      n = n_next;
      n_next = n_after;
      kind = kind_next;
      kind_next = kind_after;
      stage ^= 1;
    }
  }

  // Epilogue: finish the row sums across the quad, normalise, write.
  const bool split_out = a.num_splits > 1;
#pragma unroll
  for (int rr = 0; rr < kR; ++rr) {
    const int mt = rr / 2, h2 = (rr % 2) * 2;
    float l = row_sum[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int i = row_i(rr);
    const int64_t h = h0 + row_dh(rr);
    if (i >= row_limit) continue;
    const bool empty = i >= q_len || row_max[rr] == detail::neg_inf() || !(l > 0.f);
    const float lse = empty ? detail::neg_inf() : (row_max[rr] + __log2f(l)) * detail::kLn2;
    if (split_out) {
      const int64_t grow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
      const int64_t idx = (split * a.ws_rows + grow) * s.q_heads + h;
      const float inv = empty ? 0.f : 1.f / l;
      float* dst = a.ws_out + idx * D;
#pragma unroll
      for (int nd = 0; nd < kNO; ++nd)
        *reinterpret_cast<float2*>(dst + nd * 8 + 2 * t) = make_float2(o[mt][nd][h2] * inv, o[mt][nd][h2 + 1] * inv);
      if (t == 0) a.ws_lse[idx] = lse;
    } else {
      float denom = l;
      if (p.sink_logits && !empty) denom += detail::exp2_approx(p.sink_logits[h] * detail::kLog2e - row_max[rr]);
      const float inv = empty ? 0.f : 1.f / denom;
      T* dst = p.out_row(b, i, h);
#pragma unroll
      for (int nd = 0; nd < kNO; ++nd)
        *reinterpret_cast<uint32_t*>(dst + nd * 8 + 2 * t) = Ops::pack(o[mt][nd][h2] * inv, o[mt][nd][h2 + 1] * inv);
      if (t == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
    }
  }
  if (split_out && a.ws_count) {  // (no tickets: merge_splits_kernel merges after this launch)
    // Tickets: the CTA that takes the last one of its chunk of splits merges
    // the chunk into the chunk's first partial; the last chunk merger merges
    // the chunks into the output (one level when split_chunk >= num_splits).
    // Every split CTA of a unit gets here (a unit past row_limit returned
    // above, all of its splits alike). take_last_ticket orders the partial
    // writes before the tickets; the merging CTA's loads bypass L1.
    const int S = a.num_splits, C = a.split_chunk < S ? a.split_chunk : S;
    const int n_chunks = (S + C - 1) / C, chunk = split / C;
    const int chunk_len = S - chunk * C < C ? S - chunk * C : C;
    const unsigned unit = (static_cast<unsigned>(b) * gridDim.y + blockIdx.y) * a.m_blocks + mb;
    unsigned* const tickets = a.ws_count + unit * static_cast<unsigned>(n_chunks > 1 ? n_chunks + 1 : 1);
    volatile unsigned* last = reinterpret_cast<volatile unsigned*>(smem_raw);  // K/V smem is idle now
    if (!detail::take_last_ticket(tickets + (n_chunks > 1 ? chunk : 0),
                                  static_cast<unsigned>(n_chunks > 1 ? chunk_len : S), last))
      return;
    const int nrows = (row_limit * G - r0 < kBlockM ? row_limit * G - r0 : kBlockM);
    const int64_t stride = a.ws_rows * s.q_heads;  // between splits, in rows
    const int64_t q_start = s.varlen() ? s.q_start(b) : b * s.q_capacity;
    auto row_at = [&](int pr, int first) {  // packed row pr's partial of split `first`
      const int i = gdiv.div(pr);
      const int64_t h = h0 + gdiv.mod(pr, i);
      const int64_t idx = (first * a.ws_rows + q_start + i) * s.q_heads + h;
      detail::SplitRow<T> r;
      r.lse = a.ws_lse + idx;
      r.out = a.ws_out + idx * D;
      r.dst = p.out_row(b, i, h);
      r.lse_dst = p.lse ? p.lse_ptr(b, i, h) : nullptr;
      r.sink = p.sink_logits ? p.sink_logits + h : nullptr;
      return r;
    };
    if (n_chunks > 1) {
      for (int w0 = warp * 2; w0 < nrows; w0 += Cfg::kWarps * 2)  // 2-row batches, warps round robin
        detail::merge_split_rows_warp<T, D, false, 2>(lane, nrows - w0 < 2 ? nrows - w0 : 2, chunk_len, stride,
                                                      [&](int k) { return row_at(r0 + w0 + k, chunk * C); });
      if (!detail::take_last_ticket(tickets + n_chunks, static_cast<unsigned>(n_chunks), last)) return;
    }
    const int parts = n_chunks > 1 ? n_chunks : S;
    const int64_t part_stride = n_chunks > 1 ? stride * C : stride;
    for (int w0 = warp * 2; w0 < nrows; w0 += Cfg::kWarps * 2)
      detail::merge_split_rows_warp<T, D, true, 2>(lane, nrows - w0 < 2 ? nrows - w0 : 2, parts, part_stride,
                                                   [&](int k) { return row_at(r0 + w0 + k, 0); });
  }
}

}  // namespace attnkit::cuda
