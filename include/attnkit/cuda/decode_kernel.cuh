// The split-KV decode kernel (FlashDecoding-style CTA): every call with at
// most kDecodeMaxQueries queries and no fused RoPE runs here (launch.cuh's
// forward_hdim); fused-RoPE decode stays on flash_fwd_kernel's one-warp
// decode configuration (dispatch.cuh).
//
//  * a CTA owns 16 packed rows (a GQA group's query heads x up to 16 queries,
//    forward_kernel.cuh's packing) of one (batch, head group) and one split of
//    the key range; its kWarps warps share those rows and split the split's
//    key tiles between them round robin (warp w: tiles n_first + w, + kWarps...);
//  * each warp streams its own tiles through a private kStages-deep ring
//    (no CTA barrier in the main loop: a warp waits only for its own
//    copies), so a CTA keeps kWarps x (kStages - 1) tiles of K and V in
//    flight while it computes; the decode config fills the SM with one or two
//    such CTAs (H100: ~197 KB of smem at D = 128, one CTA per SM);
//  * on sm_90 a tile arrives by TMA (tma.cuh): lane 0 issues one tensor-map
//    copy per 64-column block of K and of V, completing on the stage's
//    mbarrier, into the SW128 layout. Why: with 16-byte cp.async (32 per lane
//    and tile) 38% of the warps' stall samples were in issuing the copies
//    (bench/cuda/NOTES-decode.md, Session 5; one bulk copy per row was slower
//    still). Elsewhere, or where a map cannot describe the tensor, the lanes
//    copy with cp.async into the same layout (KvTensorMaps::use_tma = 0);
//  * each warp keeps its own running max / sum / O over its tiles (the
//    mma.sync m16n8k16 math of flash_fwd_kernel, one m-tile), and the CTA
//    merges the warps through smem at the end: one fp32 partial per split
//    (merged by merge_splits_kernel, or by the CTA that takes a unit's last
//    ticket, DecodeTuning::in_kernel_merge: the default here) or the output
//    directly;
//  * launched with programmatic dependent launch on sm_90 (pdl.cuh): the
//    CTAs may start during the previous kernel's tail and wait for it before
//    their first global access; they release their SMs to the next kernel
//    once past the key loop;
//  * masks, softcap, ALiBi, sinks, LSE, varlen and padded lengths as in
//    flash_fwd_kernel: tiles classified by the TileClassifier (empty tiles are
//    never loaded, full tiles skip the per-element check), partial tiles
//    checked through the rows' key spans (clipped_key_span) or the predicate.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "attnkit/core/params.hpp"
#include "attnkit/cuda/forward_kernel.cuh"
#include "attnkit/cuda/merge_kernel.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/cuda/pdl.cuh"
#include "attnkit/cuda/tile_classifier.cuh"
#include "attnkit/cuda/tma.cuh"
#include "attnkit/mask/tile.hpp"
#include "attnkit/mask/traits.hpp"

namespace attnkit::cuda {

// Compile-time shape of one decode kernel instantiation: kWarps warps share
// 16 packed rows, each streams tiles of kBlockN keys through kStages smem
// buffers of its own. kMinTilesPerWarp: the split plan gives each split at
// least kWarps x this many key tiles (a split's fixed cost, Q load + partial
// write + merge share, stays small next to its K/V bytes).
template <class T, int D_, int kWarps_ = 4, int kBlockN_ = 32, int kStages_ = 3, int kMinTilesPerWarp_ = 2>
struct DecodeConfig {
  using Elem = T;
  static constexpr bool kPack = true;
  static constexpr RopeKind kRope = RopeKind::None;
  static constexpr int D = D_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16;  // packed rows of the CTA (one m-tile, every warp)
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr int kStride = D + 8;  // Q's padded smem row, elements (conflict-free ldmatrix)
  static constexpr bool kQInRegs = D <= 128;
  static constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
  // K and V tiles: SW128 (tma.cuh), (D + 63) / 64 column blocks of kBlockN
  // rows x 128 bytes; every block 1024-byte aligned.
  static constexpr int kColBlocks = (D + 63) / 64;
  static constexpr int kBlockBytes = kBlockN * 128;
  static constexpr int kSmemKV = kColBlocks * kBlockBytes;  // one K or V tile
  static constexpr int kSmemWarp = kStages * 2 * kSmemKV;   // one warp's ring
  static constexpr int kOStride = D + 8;                    // floats per row of the warp-merge buffer
  static constexpr int kSmemMerge = kWarps * kBlockM * (kOStride + 2) * 4;
  // From the 1024-aligned base: the rings (the merge buffer afterwards), Q,
  // one mbarrier per warp and stage; plus the alignment slack.
  static constexpr int kOffQ = kWarps * kSmemWarp > kSmemMerge ? kWarps* kSmemWarp : kSmemMerge;
  static constexpr int kSmemQ = kBlockM * kStride * 2;
  static constexpr int kOffBars = kOffQ + kSmemQ;
  static constexpr int kSmemBytes = kOffBars + kWarps * kStages * 8 + 1024;
  static constexpr int kMinTilesPerSplit = kWarps * kMinTilesPerWarp_;
  static_assert(D % 32 == 0 || D == 96, "head dim must be 64, 96, 128 or 256");
  static_assert(kBlockN % 16 == 0, "key tile must be a multiple of 16");
  static_assert(kStages >= 2, "at least two buffers per warp");
  static_assert(kBlockBytes % 1024 == 0 && kOffQ % 16 == 0 && kSmemQ % 8 == 0, "SW128 blocks 1024-byte aligned");
};

template <class Cfg>
struct IsDecodeConfig : std::false_type {};
template <class T, int D, int W, int N, int S, int M>
struct IsDecodeConfig<DecodeConfig<T, D, W, N, S, M>> : std::true_type {};

template <class Cfg, class Mask>
__global__ void __launch_bounds__(Cfg::kThreads)
    flash_decode_kernel(const FwdArgs<typename Cfg::Elem> a, const Mask mask,
                        const __grid_constant__ detail::KvTensorMaps maps) {
  using T = typename Cfg::Elem;
  using Ops = detail::MmaOps<T>;
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kStride = Cfg::kStride;
  constexpr int kW = Cfg::kWarps, kS = Cfg::kStages, kThreads = Cfg::kThreads;
  constexpr int kNS = kBlockN / 8;  // 8-key column blocks of S
  constexpr int kNO = D / 8;        // 8-wide column blocks of O

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ unsigned s_last;  // in-kernel merge: this CTA took its unit's last ticket
  const uint32_t s_raw = detail::smem_addr(smem_raw);
  const uint32_t s_base = (s_raw + 1023u) & ~1023u;  // SW128 blocks (TMA's swizzle) are 1024-byte aligned
  const uint32_t sQ = s_base + Cfg::kOffQ;

  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, t = lane & 3;
  const uint32_t sW = s_base + warp * Cfg::kSmemWarp;            // this warp's ring
  const uint32_t sBar = s_base + Cfg::kOffBars + warp * kS * 8;  // its stages' mbarriers
  const bool use_tma = maps.use_tma != 0;

  const int split = a.mblock_div.div(static_cast<int>(blockIdx.x));
  const int mb = a.m_blocks - 1 - a.mblock_div.mod(static_cast<int>(blockIdx.x), split);
  const int G = a.group_pack;
  const FastDivmod& gdiv = a.group_div;  // divides by G
  const int64_t b = blockIdx.z;
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * G;
  static_assert(Cfg::kPack, "a decode CTA packs a whole GQA group (forward_with: group_pack = group)");
  const int64_t hk = blockIdx.y;  // so its KV head is the grid's y (no division by the group)
  // Everything above reads only the parameters. Global memory (lengths, Q,
  // K, V, the workspace) waits for the kernel before this one on the stream
  // when the launch overlaps it (programmatic dependent launch, pdl.cuh).
  detail::wait_for_prior_grids();
  const int q_len = static_cast<int>(detail::clamp_len(s.q_len(b), s.q_capacity));
  const int row_limit = s.varlen() ? q_len : static_cast<int>(s.q_capacity);
  const int r0 = mb * kBlockM;
  if (r0 >= row_limit * G) return;

  // The prologue is a chain of dependent instructions at one warp per
  // scheduler (Session 7 trace: ~3k cycles before the first K/V copy), so
  // what the copies need comes first and everything else after them. Q
  // first, by the whole CTA, one commit group, even for a split with no key
  // tile (the epilogue waits for it): issued after the tiles, Q queues behind
  // their bytes on the SM's path from L2 (Session 7: it landed ~2800 cycles
  // later).
  detail::copy_packed_q_async<kThreads, kBlockM, Cfg::kChunksPerRow, kStride>(sQ, p, b, r0, gdiv, h0, q_len, tid);
  detail::cp_async_commit();
  // Tile n of K and V into ring stage `stage` by TMA (lane 0): arm the
  // stage's mbarrier with the boxes' bytes, one copy per column block. Rows
  // past kv_len hold whatever follows them (zeros past the tensor): V's are
  // zeroed after the wait.
  auto tma_tile = [&](int stage, int n, int row0, int batch) {
    const uint32_t dst = sW + stage * 2 * Cfg::kSmemKV, bar = sBar + stage * 8;
    detail::mbarrier_arrive_expect_tx(bar, 2 * Cfg::kSmemKV);
    const int row = row0 + n * kBlockN, hd = static_cast<int>(hk);
    const int c1 = maps.rows_inner ? row : hd, c2 = maps.rows_inner ? hd : row;
#pragma unroll
    for (int cb = 0; cb < Cfg::kColBlocks; ++cb) {
      detail::tma_load_4d(dst + cb * Cfg::kBlockBytes, &maps.k, cb * 64, c1, c2, batch, bar);
      detail::tma_load_4d(dst + Cfg::kSmemKV + cb * Cfg::kBlockBytes, &maps.v, cb * 64, c1, c2, batch, bar);
    }
  };
  // The tile this warp streams first when the mask trims nothing from the
  // split (split start + warp) is copied now, from the parameters alone,
  // instead of after the split plan below (~2k cycles of dependent
  // instructions, bench/cuda/NOTES-decode.md Session 11). Kept in stage 0
  // when the plan agrees, else drained before stage 0 is used.
  int spec = -1;
  if (use_tma && !s.varlen()) {
    int lo, hi;  // the split's tiles at the full capacity (no kv_len read yet)
    detail::split_tile_span(split, a.num_splits, static_cast<int>(a.tiles_per_split),
                            static_cast<int>((s.kv_capacity + kBlockN - 1) / kBlockN), lo, hi);
    if (lo + warp < hi) spec = lo + warp;
  }
  if (use_tma && lane == 0) {
#pragma unroll
    for (int st = 0; st < kS; ++st) detail::mbarrier_init(sBar + st * 8, 1);
    detail::mbarrier_init_fence();
    if (spec >= 0) tma_tile(0, spec, 0, static_cast<int>(b));
    if (warp == 0) detail::prefetch_tensor_map(&maps.k), detail::prefetch_tensor_map(&maps.v);
  }
  __syncwarp();
  const int kv_len = static_cast<int>(detail::clamp_len(s.kv_len(b), s.kv_capacity));
  const SeqCtx ctx0 = SeqCtx::make(b, h0, q_len, kv_len, s.alignment);

  // Key tiles of the split, trimmed to the mask's non-empty span.
  const int i_lo = gdiv.div(r0);
  const int i_hi = gdiv.div(r0 + kBlockM - 1) + 1 < q_len ? gdiv.div(r0 + kBlockM - 1) + 1 : q_len;
  const int n_tiles = (kv_len + kBlockN - 1) / kBlockN;
  const detail::TileClassifier<Mask> cls{mask, ctx0, G, i_lo, i_hi, kv_len, kBlockN};
  int n_first = 0, n_last = -1;
  TileKind kind_first = TileKind::Partial;
  cls.split_tiles(split, a.num_splits, static_cast<int>(a.tiles_per_split), n_tiles, n_first, n_last, kind_first);
  // This warp's next tile at or after n (same residue mod kW) that is not
  // Empty, and its kind; n_last + 1 when none is left.
  auto next_tile = [&](int n, TileKind& kind) -> int {
    for (; n <= n_last; n += kW) {
      kind = cls.range(n, n + 1);
      if (kind != TileKind::Empty) return n;
    }
    return n_last + 1;
  };

  const int64_t kv_start = s.kv_start(b);
  const T* k_base = p.k + (s.varlen() ? 0 : b * p.k_layout.batch_stride) + kv_start * p.k_layout.row_stride +
                    hk * p.k_layout.head_stride;
  const T* v_base = p.v + (s.varlen() ? 0 : b * p.v_layout.batch_stride) + kv_start * p.v_layout.row_stride +
                    hk * p.v_layout.head_stride;

  // Tile n of K and V into ring stage `stage`: tma_tile, or the lanes copy
  // 16-byte chunks with cp.async into the same SW128 layout, zero-filling
  // rows past kv_len.
  const int kv_row0 = static_cast<int>(kv_start);
  const int tma_batch = s.varlen() ? 0 : static_cast<int>(b);
  // (The cp.async path is not unrolled by force: on sm_90 it is the fallback,
  // and this kernel's code fetch is on its critical path, Session 7 trace.)
  auto load_kv = [&](uint32_t dst, const T* base, int64_t row_stride, int n) {
    detail::copy_rows_async<32, kBlockN, Cfg::kChunksPerRow, detail::Sw128Tile<kBlockN>, false>(
        dst, base, row_stride, n * kBlockN, kv_len, lane);
  };
  auto load_tile = [&](int stage, int n) {
    const uint32_t dst = sW + stage * 2 * Cfg::kSmemKV;
    if (use_tma) {
      if (lane == 0) tma_tile(stage, n, kv_row0, tma_batch);
    } else {
      load_kv(dst, k_base, p.k_layout.row_stride, n);
      load_kv(dst + Cfg::kSmemKV, v_base, p.v_layout.row_stride, n);
    }
  };
  uint32_t phases = 0;  // TMA: bit st = parity of stage st's next completion

  // This warp's first kS - 1 tiles, one commit group each (empty groups
  // too, so wait_group<kS - 1> always means "the tile to compute has landed").
  TileKind kind = TileKind::Partial, kind_ld = TileKind::Partial;
  int n = n_last + 1, n_ld = n_last + 1;
  if (n_first <= n_last) n = next_tile(n_first + warp, kind);
  if (spec >= 0 && !(n <= n_last && n == spec)) {
    // The early copy is not this warp's first tile (the mask trimmed the
    // split, or the batch's kv_len is shorter): let it land before stage 0
    // is refilled or the rings become the merge buffer.
    detail::mbarrier_wait(sBar, phases & 1u);
    phases ^= 1u;
    spec = -1;
  }
  if (n_first <= n_last) {
    n_ld = n;
#pragma unroll
    for (int st = 0; st < kS - 1; ++st) {
      if (n_ld <= n_last) {
        if (st != 0 || spec < 0) load_tile(st, n_ld);  // stage 0 holds the early copy
        n_ld = next_tile(n_ld + kW, kind_ld);
      }
      detail::cp_async_commit();
    }
  }

  // This thread's two rows (g and g + 8 of the m-tile): query row and head - h0.
  int row_i[2], row_dh[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr)
    row_i[rr] = gdiv.div(r0 + g + 8 * rr), row_dh[rr] = gdiv.mod(r0 + g + 8 * rr, row_i[rr]);

  const bool softcap = p.softcap > 0.f;
  const bool transform = softcap || p.alibi_slopes || !(a.scale_log2 > 0.f);
  const float sl = transform ? 1.f : a.scale_log2;
  const float cap_inv_scale = softcap ? p.scale / p.softcap : 0.f;
  const float cap_log2 = p.softcap * detail::kLog2e;

  // Partial tiles: rows' key spans (arithmetic ones recomputed per tile,
  // memory-reading ones found once per warp), else the predicate.
  constexpr bool kSpans = has_key_span<Mask>::value;
  constexpr bool kKeepSpans = kSpans && !key_span_is_arithmetic<Mask>::value;
  [[maybe_unused]] auto row_span = [&](int rr, int& lo_out, int& hi_out) -> bool {
    if constexpr (kSpans) {
      SeqCtx cr = ctx0;
      cr.head = h0 + row_dh[rr];
      return detail::clipped_key_span(mask, cr, row_i[rr], q_len, kv_len, lo_out, hi_out);
    } else {
      lo_out = hi_out = 0;
      return true;
    }
  };
  [[maybe_unused]] int kept_lo[2] = {0, 0}, kept_hi[2] = {0, 0};
  [[maybe_unused]] bool kept_ok = false, kept_found = false;

  float o[kNO][4];
#pragma unroll
  for (int i = 0; i < kNO; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float row_max[2] = {detail::neg_inf(), detail::neg_inf()}, row_sum[2] = {0.f, 0.f};

  if (n_first <= n_last) {
    detail::cp_async_wait<kS - 1>();  // Q (the oldest group) has landed
    __syncthreads();                  // ... for every warp

    const uint32_t q_warp = sQ + ((lane % 16) * kStride + (lane / 16) * 8) * 2;
    // SW128 fragment addresses: a lane's ldmatrix row r has r % 8 == lane % 8,
    // so its chunk is the compile-time chunk (even) XOR a per-lane constant.
    // K (S = Q K^T): key row nb*8 + lane%8 + 8*(lane/16), chunk 2kk + (lane/8)%2.
    // V (O += P V, transposed): key row kc*16 + lane%8 + 8*((lane/8)%2), chunk nd + lane/16.
    const uint32_t k_lane = ((lane % 8) + 8 * (lane / 16)) * 128;
    const uint32_t k_x = ((lane / 8) % 2) ^ (lane % 8);
    const uint32_t v_lane = ((lane % 8) + 8 * ((lane / 8) % 2)) * 128 + Cfg::kSmemKV;
    const uint32_t v_x = (lane / 16) ^ (lane % 8);
    uint32_t qf[Cfg::kQInRegs ? D / 16 : 1][4];
    if constexpr (Cfg::kQInRegs) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) detail::ldmatrix_x4(qf[kk], q_warp + kk * 16 * 2);
    }

    int stage = 0, ld_stage = kS - 1;
    while (n <= n_last) {
      // Refill the buffer freed by the previous tile, then wait for this one.
      if (n_ld <= n_last) {
        load_tile(ld_stage, n_ld);
        n_ld = next_tile(n_ld + kW, kind_ld);
      }
      detail::cp_async_commit();
      const int j_tile = n * kBlockN;
      if (use_tma) {
        detail::mbarrier_wait(sBar + stage * 8, (phases >> stage) & 1u);
        phases ^= 1u << stage;
        if (j_tile + kBlockN > kv_len) {
          // V rows past kv_len: P is 0 there, but 0 x NaN is not.
          const uint32_t v_tile = sW + stage * 2 * Cfg::kSmemKV + Cfg::kSmemKV;
          const int rows_ok = kv_len - j_tile;
          for (int e = lane; e < (kBlockN - rows_ok) * Cfg::kColBlocks * 8; e += 32) {
            const int r = rows_ok + e / (Cfg::kColBlocks * 8), cb = (e / 8) % Cfg::kColBlocks;
            detail::st_shared_zero16(v_tile + cb * Cfg::kBlockBytes + r * 128 + (e % 8) * 16);
          }
          detail::fence_proxy_async();  // before a later TMA write of this stage
        }
      } else {
        detail::cp_async_wait<kS - 1>();
      }
      __syncwarp();  // every lane's copies (and zeros) of this tile visible to the warp
      const uint32_t k_frag = sW + stage * 2 * Cfg::kSmemKV + k_lane;
      const uint32_t v_frag = sW + stage * 2 * Cfg::kSmemKV + v_lane;

      // S = Q K^T.
      float sc[kNS][4];
#pragma unroll
      for (int i = 0; i < kNS; ++i) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[4];
        if constexpr (Cfg::kQInRegs) {
#pragma unroll
          for (int x = 0; x < 4; ++x) af[x] = qf[kk][x];
        } else {
          detail::ldmatrix_x4(af, q_warp + kk * 16 * 2);
        }
#pragma unroll
        for (int nb = 0; nb < kNS; nb += 2) {
          uint32_t bf[4];
          detail::ldmatrix_x4(bf, k_frag + (kk / 4) * Cfg::kBlockBytes + nb * 8 * 128 + (((2 * kk) % 8) ^ k_x) * 16);
          Ops::mma(sc[nb], af, bf[0], bf[1]);
          Ops::mma(sc[nb + 1], af, bf[2], bf[3]);
        }
      }

      // Logits: softcap / ALiBi (or a non-positive scale) transform into log2
      // units here; plain scaling folds into exp2's FFMA below.
      const bool need_check = kind != TileKind::Full || j_tile + kBlockN > kv_len;
      if (transform) {
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int rr = c >> 1;
            const int j = j_tile + nb * 8 + 2 * t + (c & 1);
            float x = sc[nb][c];
            x = softcap ? cap_log2 * tanhf(x * cap_inv_scale) : x * a.scale_log2;
            if (p.alibi_slopes && row_i[rr] < q_len)
              x += p.alibi_slopes[h0 + row_dh[rr]] * detail::kLog2e * static_cast<float>(j - ctx0.pos(row_i[rr]));
            sc[nb][c] = x;
          }
      }
      bool spans_done = false;
      if constexpr (kSpans) {
        if (need_check) {
          int lo[2], hi[2];
          bool ok = true;
          if constexpr (kKeepSpans) {
            if (!kept_found) {
              kept_ok = true;
#pragma unroll
              for (int rr = 0; rr < 2; ++rr) kept_ok = row_span(rr, kept_lo[rr], kept_hi[rr]) && kept_ok;
              kept_found = true;
            }
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) lo[rr] = kept_lo[rr], hi[rr] = kept_hi[rr];
            ok = kept_ok;
          } else {
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) ok = row_span(rr, lo[rr], hi[rr]) && ok;
          }
          if (ok) {
#pragma unroll
            for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
              for (int c = 0; c < 4; ++c) {
                const int rr = c >> 1;
                const int j = j_tile + nb * 8 + 2 * t + (c & 1);
                if (j < lo[rr] || j >= hi[rr]) sc[nb][c] = detail::neg_inf();
              }
            spans_done = true;
          }
        }
      }
      if (need_check && !spans_done) {
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int rr = c >> 1;
            const int j = j_tile + nb * 8 + 2 * t + (c & 1);
            bool ok = j < kv_len && row_i[rr] < q_len;
            if (ok && kind != TileKind::Full) {
              SeqCtx cr = ctx0;
              cr.head = h0 + row_dh[rr];
              ok = mask(cr, row_i[rr], j);
            }
            if (!ok) sc[nb][c] = detail::neg_inf();
          }
      }

      // Online softmax (this warp's running max and sum).
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int h2 = rr * 2;
        float mx = detail::neg_inf();
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb) mx = fmaxf(mx, fmaxf(sc[nb][h2], sc[nb][h2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mx2 = fmaxf(row_max[rr], mx * sl);
        const float m_use = mx2 == detail::neg_inf() ? 0.f : mx2;
        const float corr = detail::exp2_approx(row_max[rr] - m_use);
        row_max[rr] = mx2;
        float sum = 0.f;
#pragma unroll
        for (int nb = 0; nb < kNS; ++nb) {
          sc[nb][h2] = detail::exp2_approx(fmaf(sc[nb][h2], sl, -m_use));
          sc[nb][h2 + 1] = detail::exp2_approx(fmaf(sc[nb][h2 + 1], sl, -m_use));
          sum += sc[nb][h2] + sc[nb][h2 + 1];
        }
        row_sum[rr] = row_sum[rr] * corr + sum;
        if (__any_sync(0xffffffffu, corr != 1.f)) {
#pragma unroll
          for (int nd = 0; nd < kNO; ++nd) o[nd][h2] *= corr, o[nd][h2 + 1] *= corr;
        }
      }

      // O += P V.
#pragma unroll
      for (int kc = 0; kc < kBlockN / 16; ++kc) {
        uint32_t pf[4];
        pf[0] = Ops::pack(sc[2 * kc][0], sc[2 * kc][1]);
        pf[1] = Ops::pack(sc[2 * kc][2], sc[2 * kc][3]);
        pf[2] = Ops::pack(sc[2 * kc + 1][0], sc[2 * kc + 1][1]);
        pf[3] = Ops::pack(sc[2 * kc + 1][2], sc[2 * kc + 1][3]);
#pragma unroll
        for (int nd = 0; nd < kNO; nd += 2) {
          uint32_t bf[4];
          detail::ldmatrix_x4_trans(bf, v_frag + (nd / 8) * Cfg::kBlockBytes + kc * 16 * 128 + ((nd % 8) ^ v_x) * 16);
          Ops::mma(o[nd], pf, bf[0], bf[1]);
          Ops::mma(o[nd + 1], pf, bf[2], bf[3]);
        }
      }
      __syncwarp();  // every lane done reading this buffer before it is refilled
      ld_stage = stage;
      stage = stage + 1 == kS ? 0 : stage + 1;
      n = next_tile(n + kW, kind);
    }
  }

  // Past the key loop: the next kernel on the stream may take the SMs this
  // grid frees (it waits for this grid's completion before reading).
  detail::allow_dependent_launch();

  // Merge the warps through smem (the K/V rings are idle once every warp
  // is past its loop): warp w's row max (log2 units), sum and unnormalised O.
  detail::cp_async_wait<0>();
  __syncthreads();
  float* const sO = reinterpret_cast<float*>(smem_raw + (s_base - s_raw));  // [kW][kBlockM][kOStride], over the rings
  float* const sM = sO + kW * kBlockM * Cfg::kOStride;                      // [kW][kBlockM]
  float* const sL = sM + kW * kBlockM;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float l = row_sum[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = g + 8 * rr;
    if (t == 0) sM[warp * kBlockM + row] = row_max[rr], sL[warp * kBlockM + row] = l;
    float* dst = sO + (warp * kBlockM + row) * Cfg::kOStride + 2 * t;
#pragma unroll
    for (int nd = 0; nd < kNO; ++nd)
      *reinterpret_cast<float2*>(dst + nd * 8) = make_float2(o[nd][2 * rr], o[nd][2 * rr + 1]);
  }
  __syncthreads();

  const bool split_out = a.num_splits > 1;
  const int nrows = row_limit * G - r0 < kBlockM ? row_limit * G - r0 : kBlockM;
  constexpr int kC4 = D / 4;  // float4 columns of a row
  for (int e = tid; e < nrows * kC4; e += kThreads) {
    const int r = e / kC4, c = e % kC4;
    float M = detail::neg_inf();
#pragma unroll
    for (int w = 0; w < kW; ++w) M = fmaxf(M, sM[w * kBlockM + r]);
    float L = 0.f;
    float4 y = make_float4(0.f, 0.f, 0.f, 0.f);
    if (M != detail::neg_inf()) {
#pragma unroll
      for (int w = 0; w < kW; ++w) {
        const float f = detail::exp2_approx(sM[w * kBlockM + r] - M);  // a warp with no key: 2^-inf = 0
        const float4 x = *reinterpret_cast<const float4*>(sO + (w * kBlockM + r) * Cfg::kOStride + 4 * c);
        L += f * sL[w * kBlockM + r];
        y.x += f * x.x, y.y += f * x.y, y.z += f * x.z, y.w += f * x.w;
      }
    }
    const int i = gdiv.div(r0 + r);
    const int64_t h = h0 + gdiv.mod(r0 + r, i);
    const bool empty = i >= q_len || M == detail::neg_inf() || !(L > 0.f);
    const float lse = empty ? detail::neg_inf() : (M + __log2f(L)) * detail::kLn2;
    if (split_out) {
      const int64_t grow = s.varlen() ? s.q_start(b) + i : b * s.q_capacity + i;
      const int64_t idx = (split * a.ws_rows + grow) * s.q_heads + h;
      const float inv = empty ? 0.f : 1.f / L;
      reinterpret_cast<float4*>(a.ws_out + idx * D)[c] = make_float4(y.x * inv, y.y * inv, y.z * inv, y.w * inv);
      if (c == 0) a.ws_lse[idx] = lse;
    } else {
      float denom = L;
      if (p.sink_logits && !empty) denom += detail::exp2_approx(p.sink_logits[h] * detail::kLog2e - M);
      const float inv = empty ? 0.f : 1.f / denom;
      *reinterpret_cast<uint2*>(p.out_row(b, i, h) + 4 * c) =
          make_uint2(Ops::pack(y.x * inv, y.y * inv), Ops::pack(y.z * inv, y.w * inv));
      if (c == 0 && p.lse) *p.lse_ptr(b, i, h) = lse;
    }
  }

  if (split_out && a.ws_count) {
    // In-kernel merge: the CTA that takes the unit's last ticket merges every
    // split of the unit's rows (one level; one row per warp, 8 parts in
    // flight per lane: 16 were no faster, Session 7). The merging loads
    // bypass L1.
    const int S = a.num_splits;
    const unsigned unit = (static_cast<unsigned>(b) * gridDim.y + blockIdx.y) * a.m_blocks + mb;
    const bool last = detail::take_last_ticket(a.ws_count + unit, static_cast<unsigned>(S), &s_last);
    if (!last) return;
    const int64_t stride = a.ws_rows * s.q_heads;
    const int64_t q_start = s.varlen() ? s.q_start(b) : b * s.q_capacity;
    for (int r = warp; r < nrows; r += kW) {
      detail::merge_split_rows_warp<T, D, true, 1, 8>(lane, 1, S, stride, [&](int) {
        const int i = gdiv.div(r0 + r);
        const int64_t h = h0 + gdiv.mod(r0 + r, i);
        const int64_t idx = (q_start + i) * s.q_heads + h;
        detail::SplitRow<T> row;
        row.lse = a.ws_lse + idx;
        row.out = a.ws_out + idx * D;
        row.dst = p.out_row(b, i, h);
        row.lse_dst = p.lse ? p.lse_ptr(b, i, h) : nullptr;
        row.sink = p.sink_logits ? p.sink_logits + h : nullptr;
        return row;
      });
    }
  }
}

}  // namespace attnkit::cuda
