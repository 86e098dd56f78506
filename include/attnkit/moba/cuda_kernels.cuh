// MoBA's device kernels (DESIGN §5). The attention itself is the library's
// flash kernel (cuda/launch.cuh); these kernels prepare its inputs and fold
// its partial results:
//
//   block_means_kernel   mean-pooled keys of every (sequence, kv head, block)
//   gate_select_kernel   gate scores, top_k - 1 past blocks per (row, head),
//                        and how many lanes chose each key block ("list")
//   fill_lists_kernel    each lane's past blocks appended to the block's list
//   head_major_kernel    k / v copied head-major, blocks padded to Bs rows
//   gather_rows_kernel   the chosen query rows, list by list
//   fold_parts_kernel    a chunk of list results merged into each lane's
//                        running fp32 (out, lse), ascending block order
//   finish_kernel        the running part merged with the own-block part,
//                        sink applied, out and lse written
//
// A "lane" is one (query row, query head); lanes are indexed
// row * Hq + head with rows numbered as in the output (padded: b * Sq + i,
// varlen: cu_seqlens_q[b] + i). A "list" is one (sequence, kv head, block),
// indexed (b * Hkv + kv head) * blocks + block.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/core/params.hpp"
#include "attnkit/cuda/forward_kernel.cuh"
#include "attnkit/cuda/mma.cuh"
#include "attnkit/mask/tile.hpp"
#include "attnkit/moba/config.hpp"
#include "attnkit/moba/own_block_mask.hpp"
#include "attnkit/moba/selection.hpp"

namespace attnkit::moba::cuda {

using attnkit::cuda::detail::clamp_len;
using attnkit::cuda::detail::MmaOps;
using attnkit::cuda::detail::neg_inf;

// Threads per gate CTA (one lane each) and blocks per staged means chunk.
inline constexpr int kGateLanes = 128;
inline constexpr int kGateChunk = 32;

// What every MoBA kernel needs to know about the call (a POD, by value).
template <class T>
struct MobaArgs {
  AttentionParams<T> p;  // q / k rotated when RoPE is on
  int64_t block_size = 1;
  int64_t top_k = 1;
  int64_t blocks = 1;                         // per sequence: ceil(kv_capacity / Bs)
  int64_t slots = 1;                          // selection list capacity per lane
  float* means = nullptr;                     // [B][Hkv][means_stride][D]
  int64_t means_stride = 1;                   // blocks per (sequence, kv head) in means (>= blocks)
  int32_t* sel_blocks = nullptr;              // [lanes][slots], ascending, own block last
  int32_t* sel_count = nullptr;               // [lanes]
  float* sel_score = nullptr;                 // [lanes][slots] gate scratch
  int32_t* list_count = nullptr;              // [B * Hkv * blocks]
  unsigned long long* list_cursor = nullptr;  // fill: next free entry of each list
  int64_t* entry_lane = nullptr;              // [entries]: the lane of each entry
  int64_t* part_of = nullptr;                 // [lanes][slots]: entry of each past slot

  __device__ int64_t row_of(int64_t b, int64_t i) const {
    return p.shape.varlen() ? p.shape.q_start(b) + i : b * p.shape.q_capacity + i;
  }
};

// Row i of sequence b / head h of an operand, from its output-numbered row.
template <class T>
__device__ const T* q_row_global(const AttentionParams<T>& p, int64_t row, int64_t h) {
  const ProblemShape& s = p.shape;
  if (s.varlen()) return p.q + row * p.q_layout.row_stride + h * p.q_layout.head_stride;
  const int64_t b = row / s.q_capacity, i = row % s.q_capacity;
  return p.q + b * p.q_layout.batch_stride + i * p.q_layout.row_stride + h * p.q_layout.head_stride;
}

// grid (blocks from first_block on, Hkv, B), block (D, kMeanSplit): thread (d, y) sums rows
// y, y + kMeanSplit, ... of the block in ascending order; the partial sums
// are added in y order. The same order for every block, so blocks with equal
// keys get bit-equal means (and the gate exact ties).
inline constexpr int kMeanSplit = 4;
template <class T>
__global__ void block_means_kernel(const MobaArgs<T> a, int64_t first_block) {
  extern __shared__ float part[];  // [kMeanSplit][D]
  const ProblemShape& s = a.p.shape;
  const int64_t D = s.head_dim;
  const int64_t c = first_block + blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int d = threadIdx.x, y = threadIdx.y;
  const int64_t kv_len = clamp_len(s.kv_len(b), s.kv_capacity);
  const int64_t j0 = c * a.block_size;
  const int64_t j1 = j0 + a.block_size < kv_len ? j0 + a.block_size : kv_len;
  float sum = 0.f;
  for (int64_t j = j0 + y; j < j1; j += kMeanSplit) sum += MmaOps<T>::load(a.p.k_row(b, j, hk) + d);
  part[y * D + d] = sum;
  __syncthreads();
  if (y != 0) return;
  float total = part[d];
  for (int yy = 1; yy < kMeanSplit; ++yy) total += part[yy * D + d];
  const float n = j1 > j0 ? static_cast<float>(j1 - j0) : 1.f;
  a.means[((b * s.kv_heads + hk) * a.means_stride + c) * D + d] = j1 > j0 ? total / n : 0.f;
}

// grid (lane tiles, Hkv, B), kGateLanes threads: lane l of (b, kv head hk) is
// query row l / G, query head hk * G + l % G. Each thread keeps its query in
// a shared column (storage dtype, so more CTAs fit; widened to fp32 on use)
// and scores kGateChunk blocks per pass against means staged feature-major in
// shared memory (broadcast reads), summing d = 0, 1, ... with fused
// multiply-adds: equal means give equal scores.
// The top list lives in the lane's selection row and score scratch (global,
// cached); a register copy of its threshold rejects most candidates at once.
template <class T, int D>
__global__ void __launch_bounds__(kGateLanes) gate_select_kernel(const MobaArgs<T> a) {
  extern __shared__ float smem[];
  float* ms = smem;                                     // [D][kGateChunk]
  T* qs = reinterpret_cast<T*>(smem + D * kGateChunk);  // [D][kGateLanes], storage dtype: more CTAs fit
  __shared__ int64_t chunk_end;
  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int64_t hk = blockIdx.y, b = blockIdx.z, G = s.group();
  const int tid = threadIdx.x;
  const int64_t l = static_cast<int64_t>(blockIdx.x) * kGateLanes + tid;
  const int64_t q_len = clamp_len(s.q_len(b), s.q_capacity), kv_len = clamp_len(s.kv_len(b), s.kv_capacity);
  const int64_t i = l / G, h = hk * G + l % G;
  const bool valid = i < q_len;
  const SeqCtx ctx = SeqCtx::make(b, h, q_len, kv_len, s.alignment);
  const int64_t own = valid ? own_block(ctx.pos(i), a.block_size) : -1;
  const int64_t nc = num_candidates(own, a.block_size, kv_len);
  const int64_t want = own < 0 ? 0 : (a.top_k - 1 < nc ? a.top_k - 1 : nc);
  const bool scored = want > 0 && want < nc;

  if (tid == 0) chunk_end = 0;
  __syncthreads();
  if (scored) atomicMax(reinterpret_cast<unsigned long long*>(&chunk_end), static_cast<unsigned long long>(nc));
  if (scored) {
    const uint4* qr = reinterpret_cast<const uint4*>(q_row_global(p, a.row_of(b, i), h));  // 16-byte aligned rows
    for (int d8 = 0; d8 < D / 8; ++d8) {
      const uint4 x = qr[d8];
      const T* e = reinterpret_cast<const T*>(&x);
#pragma unroll
      for (int u = 0; u < 8; ++u) qs[(8 * d8 + u) * kGateLanes + tid] = e[u];
    }
  }
  __syncthreads();
  const int64_t ncmax = chunk_end;

  const int64_t lane = valid ? a.row_of(b, i) * s.q_heads + h : 0;
  int32_t* best_block = a.sel_blocks + lane * a.slots;
  float* best_score = a.sel_score + lane * a.slots;
  int64_t n = 0;
  float thr = neg_inf();  // score to beat once the list is full
  const float* mean_bh = a.means + (b * s.kv_heads + hk) * a.means_stride * D;
  for (int64_t c0 = 0; c0 < ncmax; c0 += kGateChunk) {
    __syncthreads();  // the previous chunk is no longer read
    for (int e = tid; e < kGateChunk * D; e += kGateLanes) {
      const int cc = e / D, d = e % D;
      ms[d * kGateChunk + cc] = c0 + cc < a.means_stride ? mean_bh[(c0 + cc) * D + d] : 0.f;
    }
    __syncthreads();
    if (!scored || c0 >= nc) continue;
    float acc[kGateChunk];
#pragma unroll
    for (int cc = 0; cc < kGateChunk; ++cc) acc[cc] = 0.f;
    for (int d = 0; d < D; ++d) {
      const float qd = MmaOps<T>::load(qs + d * kGateLanes + tid);
      const float4* m4 = reinterpret_cast<const float4*>(ms + d * kGateChunk);
#pragma unroll
      for (int v = 0; v < kGateChunk / 4; ++v) {
        const float4 m = m4[v];
        acc[4 * v] = fmaf(qd, m.x, acc[4 * v]);
        acc[4 * v + 1] = fmaf(qd, m.y, acc[4 * v + 1]);
        acc[4 * v + 2] = fmaf(qd, m.z, acc[4 * v + 2]);
        acc[4 * v + 3] = fmaf(qd, m.w, acc[4 * v + 3]);
      }
    }
#pragma unroll
    for (int cc = 0; cc < kGateChunk; ++cc) {
      const int64_t c = c0 + cc;
      if (c < nc && (n < want || acc[cc] > thr)) {
        TopList::insert(acc[cc], static_cast<int32_t>(c), best_score, best_block, n, want);
        if (n == want) thr = best_score[n - 1];
      }
    }
  }
  if (!valid) return;
  if (own < 0) {
    a.sel_count[lane] = 0;
    return;
  }
  if (!scored)
    for (int64_t c = 0; c < want; ++c) best_block[c] = static_cast<int32_t>(c);
  const int64_t count = finish_row(best_block, scored ? n : want, own, best_block);
  a.sel_count[lane] = static_cast<int32_t>(count);
  int32_t* list = a.list_count + (b * s.kv_heads + hk) * a.blocks;
  for (int64_t x = 0; x + 1 < count; ++x) atomicAdd(list + best_block[x], 1);
}

// Same grid as the gate. Entry order inside a list depends on atomics, but
// no lane's result depends on its neighbours in the flash kernel, so outputs
// do not either.
template <class T>
__global__ void __launch_bounds__(kGateLanes) fill_lists_kernel(const MobaArgs<T> a) {
  const ProblemShape& s = a.p.shape;
  const int64_t hk = blockIdx.y, b = blockIdx.z, G = s.group();
  const int64_t l = static_cast<int64_t>(blockIdx.x) * kGateLanes + threadIdx.x;
  const int64_t q_len = clamp_len(s.q_len(b), s.q_capacity);
  const int64_t i = l / G, h = hk * G + l % G;
  if (i >= q_len) return;
  const int64_t lane = a.row_of(b, i) * s.q_heads + h;
  const int32_t count = a.sel_count[lane];
  const int32_t* blocks = a.sel_blocks + lane * a.slots;
  unsigned long long* cursor = a.list_cursor + (b * s.kv_heads + hk) * a.blocks;
  for (int32_t x = 0; x + 1 < count; ++x) {
    const auto e = static_cast<int64_t>(atomicAdd(cursor + blocks[x], 1ULL));
    a.entry_lane[e] = lane;
    a.part_of[lane * a.slots + x] = e;
  }
}

// grid (ceil(blocks * Bs / 8), Hkv, B), block (D / 8, 8): dst[(b * Hkv + hk)
// * blocks * Bs + j][D], rows past kv_len zero (a masked key still meets its
// V row in P.V, and 0 * NaN would be NaN).
template <class T>
__global__ void head_major_kernel(const AttentionParams<T> p, const T* src_base, SeqLayout layout, T* dst,
                                  int64_t rows_per_head) {
  const ProblemShape& s = p.shape;
  const int64_t D = s.head_dim;
  const int64_t hk = blockIdx.y, b = blockIdx.z;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (j >= rows_per_head) return;
  const int64_t kv_len = clamp_len(s.kv_len(b), s.kv_capacity);
  uint4* out = reinterpret_cast<uint4*>(dst + ((b * s.kv_heads + hk) * rows_per_head + j) * D) + threadIdx.x;
  if (j >= kv_len) {
    *out = make_uint4(0, 0, 0, 0);
    return;
  }
  const T* row = AttentionParams<T>::row(src_base, layout, s, false, b, j, hk);
  *out = reinterpret_cast<const uint4*>(row)[threadIdx.x];
}

// Entries [e0, e0 + n): dst[e - e0] = that lane's query row. Block (D / 8, 8).
template <class T>
__global__ void gather_rows_kernel(const MobaArgs<T> a, int64_t e0, int64_t n, T* dst) {
  const int64_t D = a.p.shape.head_dim, Hq = a.p.shape.q_heads;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (e >= n) return;
  const int64_t lane = a.entry_lane[e0 + e];
  const T* src = q_row_global(a.p, lane / Hq, lane % Hq);
  reinterpret_cast<uint4*>(dst + e * D)[threadIdx.x] = reinterpret_cast<const uint4*>(src)[threadIdx.x];
}

// Lanes of the output as (b, i, h): grid (ceil(Sq_cap * Hq / kWarpsPerCta), B),
// one warp per lane.
inline constexpr int kFoldWarps = 4;

// Merges (out, lse) part x into the running (acc, acc_lse) of one lane;
// the first part initialises it. Each thread owns D / 32 columns.
template <int D>
__device__ __forceinline__ void merge_into(float* acc, float* acc_lse, bool first, const float (&x)[D / 32],
                                           float lse_x, int lane_id) {
  if (first) {
#pragma unroll
    for (int c = 0; c < D / 32; ++c) acc[lane_id + 32 * c] = x[c];
    if (lane_id == 0) *acc_lse = lse_x;
    return;
  }
  const float lse_a = *acc_lse;
  const float m = fmaxf(lse_a, lse_x);
  if (m == neg_inf()) return;  // both absent
  const float wa = __expf(lse_a - m), wx = __expf(lse_x - m);
  const float inv = 1.f / (wa + wx);
#pragma unroll
  for (int c = 0; c < D / 32; ++c) {
    float* o = acc + lane_id + 32 * c;
    *o = (*o * wa + x[c] * wx) * inv;
  }
  __syncwarp();
  if (lane_id == 0) *acc_lse = m + __logf(wa + wx);
}

// A chunk's list results (entries [e0, e1), out rows `part_out`, lse
// `part_lse`, both indexed e - e0) folded into every lane that owns some.
template <class T, int D>
__global__ void __launch_bounds__(32 * kFoldWarps)
    fold_parts_kernel(const MobaArgs<T> a, int64_t e0, int64_t e1, const T* part_out, const float* part_lse, float* acc,
                      float* acc_lse) {
  const ProblemShape& s = a.p.shape;
  const int64_t b = blockIdx.y;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kFoldWarps + threadIdx.x / 32;
  const int lane_id = threadIdx.x % 32;
  const int64_t i = w / s.q_heads, h = w % s.q_heads;
  if (i >= clamp_len(s.q_len(b), s.q_capacity)) return;
  const int64_t lane = a.row_of(b, i) * s.q_heads + h;
  const int32_t count = a.sel_count[lane];
  for (int32_t x = 0; x + 1 < count; ++x) {
    const int64_t e = a.part_of[lane * a.slots + x];
    if (e < e0 || e >= e1) continue;
    float v[D / 32];
#pragma unroll
    for (int c = 0; c < D / 32; ++c) v[c] = MmaOps<T>::load(part_out + (e - e0) * D + lane_id + 32 * c);
    merge_into<D>(acc + lane * D, acc_lse + lane, x == 0, v, part_lse[e - e0], lane_id);
    __syncwarp();
  }
}

// The own-block part (already in out, its lse in own_lse with the output's
// lse layout) merged last with the lane's past parts; sink; out and lse.
template <class T, int D>
__global__ void __launch_bounds__(32 * kFoldWarps)
    finish_kernel(const MobaArgs<T> a, const float* own_lse, const float* acc, const float* acc_lse) {
  const AttentionParams<T>& p = a.p;
  const ProblemShape& s = p.shape;
  const int64_t b = blockIdx.y;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kFoldWarps + threadIdx.x / 32;
  const int lane_id = threadIdx.x % 32;
  const int64_t i = w / s.q_heads, h = w % s.q_heads;
  const int64_t q_len = clamp_len(s.q_len(b), s.q_capacity);
  const int64_t row_limit = s.varlen() ? q_len : s.q_capacity;
  if (i >= row_limit) return;
  const int64_t lane = a.row_of(b, i) * s.q_heads + h;
  // The output's lse layout (strides set even when the caller asked for none).
  const int64_t lse_off = (s.varlen() ? s.q_start(b) : b * p.lse_batch_stride) + h * p.lse_head_stride + i;
  T* out = p.out_row(b, i, h);
  const int32_t count = i < q_len ? a.sel_count[lane] : 0;
  float o[D / 32];
  float lse = own_lse[lse_off];
#pragma unroll
  for (int c = 0; c < D / 32; ++c) o[c] = MmaOps<T>::load(out + lane_id + 32 * c);
  if (count > 1) {
    const float la = acc_lse[lane];
    const float m = fmaxf(la, lse);
    if (m != neg_inf()) {
      const float wa = __expf(la - m), wo = __expf(lse - m);
      const float inv = 1.f / (wa + wo);
#pragma unroll
      for (int c = 0; c < D / 32; ++c) o[c] = (acc[lane * D + lane_id + 32 * c] * wa + o[c] * wo) * inv;
      lse = m + __logf(wa + wo);
    }
  }
  const float post = p.sink_logits && lse != neg_inf() ? 1.f / (1.f + __expf(p.sink_logits[h] - lse)) : 1.f;
#pragma unroll
  for (int c = 0; c < D / 32; ++c) MmaOps<T>::store(out + lane_id + 32 * c, o[c] * post);
  if (lane_id == 0 && p.lse) p.lse[lse_off] = lse;
}

// Keys of one list (a "sequence" of the gathered flash call): the block's
// first valid_keys(list) rows; rows past a sequence's end are zero padding.
struct ListKeysMask : MaskBase<ListKeysMask> {
  ProblemShape shape;  // the original call's (kv lengths)
  int64_t first_list = 0;
  int64_t blocks = 1;
  int64_t block_size = 1;

  ATTNKIT_HDI int64_t valid_keys(int64_t local_list) const {
    const int64_t list = first_list + local_list;
    const int64_t b = list / (shape.kv_heads * blocks), c = list % blocks;
    const int64_t len = shape.kv_len(b);
    const int64_t cap = len < shape.kv_capacity ? len : shape.kv_capacity;
    const int64_t n = cap - c * block_size;
    return n < 0 ? 0 : (n > block_size ? block_size : n);
  }
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t, int64_t j) const { return j < valid_keys(s.batch); }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t, int64_t, int64_t j0, int64_t j1) const {
    const int64_t n = valid_keys(s.batch);
    return j1 <= n ? TileKind::Full : (j0 >= n ? TileKind::Empty : TileKind::Partial);
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t, int64_t& lo, int64_t& hi) const {
    lo = 0, hi = valid_keys(s.batch);
    return true;
  }
};

}  // namespace attnkit::moba::cuda
