// One block of query rows against a range of keys: FlashAttention-2's inner
// loop on the CPU. Rows are (query head of one GQA group, query index) pairs,
// so every K/V tile is read once for all heads that share it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/compat/xsimd_compat.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cpu/micro_kernels.hpp"
#include "attnkit/cpu/rope_fusion.hpp"
#include "attnkit/cpu/simd.hpp"
#include "attnkit/mask/tile.hpp"

namespace attnkit {
namespace cpu {
namespace detail {

using AlignedFloats = std::vector<float, xsimd::aligned_allocator<float, 64>>;

// Per-worker buffers, sized once per call and reused by every block.
struct Scratch {
  AlignedFloats qt, kbuf, vbuf, st, ot, row, lane;
  // Far-branch copies for ReRoPE / Leaky ReRoPE (two rotations per row).
  AlignedFloats qt_far, kbuf_far, st_far, row_far;
  std::vector<SeqCtx> ctx;
  std::vector<int64_t> lane_head, lane_i, lane_qpos;

  void ensure(int64_t rows, int64_t d, int64_t dv, int64_t tile_keys, bool relative) {
    grow(qt, d * rows);
    grow(kbuf, tile_keys * d);
    grow(vbuf, tile_keys * dv);
    grow(st, tile_keys * rows);
    grow(ot, dv * rows);
    grow(row, std::max(d, dv));
    grow(lane, 4 * rows);
    if (relative) {
      grow(qt_far, d * rows);
      grow(kbuf_far, tile_keys * d);
      grow(st_far, tile_keys * rows);
      grow(row_far, d);
    }
    if (static_cast<int64_t>(lane_head.size()) < rows) {
      lane_head.resize(static_cast<size_t>(rows));
      lane_i.resize(static_cast<size_t>(rows));
      lane_qpos.resize(static_cast<size_t>(rows));
      ctx.resize(static_cast<size_t>(rows));
    }
  }

 private:
  static void grow(AlignedFloats& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  }
};

// The query rows of one block, all reading kv head `kvh` of sequence `b`:
// lane r holds query head head[r] and query index query[r]. Tile
// classification asks the mask about the covering ranges heads [h_lo, h_hi)
// x queries [i_lo, i_hi), which is sound for any set of lanes (exact for the
// contiguous blocks of prefill and decode). Gathered lanes serve MoBA.
struct BlockRows {
  static constexpr int kMaxRows = 64;
  int64_t b = 0, kvh = 0;
  int64_t count = 0;
  int64_t h_lo = 0, h_hi = 0, i_lo = 0, i_hi = 0;
  int64_t head[kMaxRows] = {};
  int64_t query[kMaxRows] = {};

  int64_t valid() const { return count; }

  // heads [h0, h0 + heads) x queries [i0, i0 + tq), head-major.
  static BlockRows contiguous(int64_t b, int64_t kvh, int64_t h0, int64_t heads, int64_t i0, int64_t tq) {
    BlockRows br;
    br.b = b;
    br.kvh = kvh;
    br.count = heads * tq;
    br.h_lo = h0;
    br.h_hi = h0 + heads;
    br.i_lo = i0;
    br.i_hi = i0 + tq;
    for (int64_t r = 0; r < br.count; ++r) {
      br.head[r] = h0 + r / tq;
      br.query[r] = i0 + r % tq;
    }
    return br;
  }
};

// Finished rows of a block: m and l per lane (log2 domain), O^T in scratch.ot.
struct BlockResult {
  float* m = nullptr;  // [rows]
  float* l = nullptr;  // [rows]
};

template <class T, class B, int MV, class Mask>
class BlockRunner {
 public:
  using Blk = Blocking<B, MV>;
  static constexpr int L = Blk::kLanes;
  static constexpr int M = Blk::kRows;
  static constexpr int N = Blk::kTileKeys;

  // `rope` (optional) rotates Q rows and K rows as they are loaded.
  BlockRunner(const AttentionParams<T>& p, const Mask& mask, Scratch& s, const RopeFusion* rope = nullptr)
      : p_(p), mask_(mask), s_(s), rope_(rope && rope->enabled() ? rope : nullptr) {
    relative_ = rope_ && rope_->relative();
    s_.ensure(M, p.shape.head_dim, p.shape.v_head_dim, N, relative_);
    post_logits_ = p.softcap > 0.0f || p.alibi_slopes != nullptr;
  }

  // Runs rows `br` over keys [jb, je) of sequence br.b; the result stays in
  // scratch (O^T unnormalised) and `res` (max, sum per lane, log2 domain).
  void run(const BlockRows& br, int64_t jb, int64_t je, BlockResult res) {
    begin(br);
    for (int64_t j0 = jb; j0 < je; j0 += N) step(j0, std::min<int64_t>(N, je - j0), je);
    finish(res);
  }

  // The same in pieces, so a caller can interleave several blocks (decode
  // walks one key range across all KV heads in step). `br` must outlive them.
  void begin(const BlockRows& br) {
    br_ = &br;
    setup_lanes(br);
    load_q(br);
    std::fill(s_.ot.begin(), s_.ot.begin() + p_.shape.v_head_dim * M, 0.0f);
    for (int v = 0; v < MV; ++v) {
      m_[v] = B(-std::numeric_limits<float>::infinity());
      l_[v] = B(0.0f);
    }
  }

  // Keys [j0, j0 + n), n <= N; `je` bounds the prefetch of the next tile.
  void step(int64_t j0, int64_t n, int64_t je) {
    const BlockRows& br = *br_;
    const int64_t Dv = p_.shape.v_head_dim;
    const TileKind kind = classify(br, j0, j0 + n);
    if (kind == TileKind::Empty) return;
    if (!preloaded_ && j0 + N < je) prefetch_tile(br, j0 + N, std::min<int64_t>(N, je - j0 - N));
    scores(br, j0, n);
    if (post_logits_) transform_logits(br, j0, n);
    if (kind == TileKind::Partial) apply_mask(j0, n, br.valid());
    B alpha[MV];
    softmax_update(n, m_, l_, alpha);
    if (!preloaded_) rows_as_float(p_.v, p_.v_layout, br, j0, n, Dv, s_.vbuf.data());
    pv_tile<B, MV>(s_.st.data(), n, s_.vbuf.data(), Dv, Dv, s_.ot.data(), alpha);
  }

  void finish(BlockResult res) const {
    for (int v = 0; v < MV; ++v) {
      m_[v].store_unaligned(res.m + v * L);
      l_[v].store_unaligned(res.l + v * L);
    }
  }

  const float* ot() const { return s_.ot.data(); }

  // A caller that fills this block's K/V tile buffers itself (dense [n][D]
  // and [n][Dv] fp32, unrotated) before each step sets this; the runner then
  // skips its own copy. Decode uses it to read the cache sequentially.
  void set_preloaded(bool on) { preloaded_ = on; }
  float* k_tile() { return s_.kbuf.data(); }
  float* v_tile() { return s_.vbuf.data(); }

 private:
  // S^T for keys [j0, j0 + n) into st. With ReRoPE / Leaky ReRoPE, each pair's
  // score comes from the near rotations (r = p - j <= w) or the far ones;
  // tiles entirely on one side compute only that branch.
  void scores(const BlockRows& br, int64_t j0, int64_t n) {
    const int64_t D = p_.shape.head_dim;
    if (!preloaded_) rows_as_float(p_.k, p_.k_layout, br, j0, n, D, s_.kbuf.data());
    if (!relative_) {
      if (rope_) rotate_k(br, j0, n, s_.kbuf.data(), /*far=*/false);
      qk_tile<B, MV>(s_.qt.data(), D, s_.kbuf.data(), D, n, s_.st.data());
      return;
    }
    const int64_t kmin = p_.kv_positions ? min_kpos(br, j0, n) : j0;
    const int64_t kmax = p_.kv_positions ? max_kpos(br, j0, n) : j0 + n - 1;
    const rope::RelativeBranch branch = rope::relative_tile_branch(rope_->params, qpos_min_, qpos_max_, kmin, kmax);
    if (branch != rope::RelativeBranch::Near) {
      std::copy(s_.kbuf.begin(), s_.kbuf.begin() + n * D, s_.kbuf_far.begin());
      rotate_k(br, j0, n, s_.kbuf_far.data(), /*far=*/true);
    }
    if (branch != rope::RelativeBranch::Far) rotate_k(br, j0, n, s_.kbuf.data(), /*far=*/false);
    if (branch == rope::RelativeBranch::Near) {
      qk_tile<B, MV>(s_.qt.data(), D, s_.kbuf.data(), D, n, s_.st.data());
    } else if (branch == rope::RelativeBranch::Far) {
      qk_tile<B, MV>(s_.qt_far.data(), D, s_.kbuf_far.data(), D, n, s_.st.data());
    } else {
      qk_tile<B, MV>(s_.qt.data(), D, s_.kbuf.data(), D, n, s_.st.data());
      qk_tile<B, MV>(s_.qt_far.data(), D, s_.kbuf_far.data(), D, n, s_.st_far.data());
      float* st = s_.st.data();
      const float* far = s_.st_far.data();
      for (int64_t jj = 0; jj < n; ++jj) {
        const int64_t kp = p_.kv_position(br.b, j0 + jj);
        for (int64_t r = 0; r < br.valid(); ++r)
          if (!rope::use_near_branch(rope_->params, s_.lane_qpos[r], kp)) st[jj * M + r] = far[jj * M + r];
      }
    }
  }

  void rotate_k(const BlockRows& br, int64_t j0, int64_t n, float* buf, bool far) const {
    const int64_t D = p_.shape.head_dim;
    for (int64_t jj = 0; jj < n; ++jj) {
      const int64_t kp = p_.kv_position(br.b, j0 + jj);
      rope_->rotate(buf + jj * D, far ? rope::far_k_position(rope_->params, kp) : static_cast<double>(kp));
    }
  }
  int64_t min_kpos(const BlockRows& br, int64_t j0, int64_t n) const {
    int64_t m = INT64_MAX;
    for (int64_t jj = 0; jj < n; ++jj) m = std::min(m, p_.kv_position(br.b, j0 + jj));
    return m;
  }
  int64_t max_kpos(const BlockRows& br, int64_t j0, int64_t n) const {
    int64_t m = INT64_MIN;
    for (int64_t jj = 0; jj < n; ++jj) m = std::max(m, p_.kv_position(br.b, j0 + jj));
    return m;
  }

  // Per-lane mask context; ctx is indexed by head - h_lo.
  void setup_lanes(const BlockRows& br) {
    for (int64_t h = br.h_lo; h < br.h_hi; ++h) s_.ctx[h - br.h_lo] = p_.shape.ctx(br.b, h);
    qpos_min_ = INT64_MAX;
    qpos_max_ = INT64_MIN;
    for (int64_t r = 0; r < br.valid(); ++r) {
      s_.lane_head[r] = br.head[r] - br.h_lo;
      s_.lane_i[r] = br.query[r];
      if (rope_) {
        s_.lane_qpos[r] = p_.q_position(br.b, br.query[r]);
        qpos_min_ = std::min(qpos_min_, s_.lane_qpos[r]);
        qpos_max_ = std::max(qpos_max_, s_.lane_qpos[r]);
      }
    }
  }

  // Qt[d][r] = q[r][d] * scale (times log2(e) unless logits are post-processed
  // in natural units first); unused lanes are zero so they stay finite.
  void load_q(const BlockRows& br) {
    const int64_t D = p_.shape.head_dim;
    const float qscale = post_logits_ ? p_.scale : p_.scale * kLog2e;
    float* qt = s_.qt.data();
    float* row = s_.row.data();
    float* qt_far = relative_ ? s_.qt_far.data() : nullptr;
    float* row_far = relative_ ? s_.row_far.data() : nullptr;
    for (int64_t r = 0; r < M; ++r) {
      if (r < br.valid()) {
        to_float_row(p_.q_row(br.b, br.query[r], br.head[r]), row, D);
        if (relative_) {
          std::copy(row, row + D, row_far);
          rope_->rotate(row_far, rope::far_q_position(rope_->params, s_.lane_qpos[r]));
          for (int64_t d = 0; d < D; ++d) qt_far[d * M + r] = row_far[d] * qscale;
        }
        if (rope_) rope_->rotate(row, static_cast<double>(s_.lane_qpos[r]));
        for (int64_t d = 0; d < D; ++d) qt[d * M + r] = row[d] * qscale;
      } else {
        for (int64_t d = 0; d < D; ++d) qt[d * M + r] = 0.0f;
        if (relative_)
          for (int64_t d = 0; d < D; ++d) qt_far[d * M + r] = 0.0f;
      }
    }
  }

  // Tile rows are copied (and widened from 16-bit) into a dense buffer. Even
  // fp32 rows are copied: rows of one head sit Hkv * D floats apart (4 KiB
  // for Hkv = 8, D = 128), so the KR rows a micro-kernel reads together would
  // all map to the same L1 set and evict each other (V strips walk 48 rows of
  // one set). The micro-kernels therefore always read buf with stride dim.
  void rows_as_float(const T* base, const SeqLayout& lay, const BlockRows& br, int64_t j0, int64_t n, int64_t dim,
                     float* buf) const {
    const T* first = AttentionParams<T>::row(base, lay, p_.shape, false, br.b, j0, br.kvh);
    for (int64_t jj = 0; jj < n; ++jj) to_float_row(first + jj * lay.row_stride, buf + jj * dim, dim);
  }

  // Rows of one head are strided by whole pages (Hkv * D * sizeof(T) is
  // often 4 KiB), and hardware prefetchers stop at page boundaries, so each
  // row would be a cold miss. Ask for the next tile while computing this one.
  void prefetch_tile(const BlockRows& br, int64_t j0, int64_t n) const {
    prefetch_rows(p_.k, p_.k_layout, br, j0, n, p_.shape.head_dim);
    prefetch_rows(p_.v, p_.v_layout, br, j0, n, p_.shape.v_head_dim);
  }
  void prefetch_rows(const T* base, const SeqLayout& lay, const BlockRows& br, int64_t j0, int64_t n,
                     int64_t dim) const {
    const char* first =
        reinterpret_cast<const char*>(AttentionParams<T>::row(base, lay, p_.shape, false, br.b, j0, br.kvh));
    const int64_t bytes = dim * static_cast<int64_t>(sizeof(T)),
                  stride = lay.row_stride * static_cast<int64_t>(sizeof(T));
    for (int64_t jj = 0; jj < n; ++jj)
      for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(first + jj * stride + off, 0, 3);
  }

  TileKind classify(const BlockRows& br, int64_t j0, int64_t j1) const {
    bool all_full = true, all_empty = true;
    for (int64_t hg = 0; hg < br.h_hi - br.h_lo; ++hg) {
      const TileKind k = mask_.classify(s_.ctx[hg], br.i_lo, br.i_hi, j0, j1);
      if (k == TileKind::Partial) return TileKind::Partial;
      all_full = all_full && k == TileKind::Full;
      all_empty = all_empty && k == TileKind::Empty;
    }
    return all_empty ? TileKind::Empty : all_full ? TileKind::Full : TileKind::Partial;
  }

  void apply_mask(int64_t j0, int64_t n, int64_t valid) {
    const float ninf = -std::numeric_limits<float>::infinity();
    float* st = s_.st.data();
    for (int64_t jj = 0; jj < n; ++jj)
      for (int64_t r = 0; r < valid; ++r)
        if (!mask_(s_.ctx[s_.lane_head[r]], s_.lane_i[r], j0 + jj)) st[jj * M + r] = ninf;
  }

  // Softcap and ALiBi act on natural-unit logits; then convert to log2 units.
  void transform_logits(const BlockRows& br, int64_t j0, int64_t n) {
    float* slope = s_.lane.data();
    float* dist0 = slope + M;
    for (int64_t r = 0; r < M; ++r) {
      const bool ok = r < br.valid();
      slope[r] = (ok && p_.alibi_slopes) ? p_.alibi_slopes[br.head[r]] : 0.0f;
      // j - p(i) in int64 first: exact for any position, then one rounding.
      dist0[r] = ok ? static_cast<float>(j0 - s_.ctx[s_.lane_head[r]].pos(s_.lane_i[r])) : 0.0f;
    }
    const bool capped = p_.softcap > 0.0f;
    const B cap(p_.softcap), inv_cap(capped ? 1.0f / p_.softcap : 0.0f), log2e(kLog2e);
    float* st = s_.st.data();
    for (int64_t jj = 0; jj < n; ++jj)
      for (int v = 0; v < MV; ++v) {
        B x = B::load_aligned(st + jj * M + v * L);
        if (capped) x = cap * xsimd::tanh(x * inv_cap);
        if (p_.alibi_slopes)
          x = fmadd(B::load_aligned(slope + v * L), B::load_aligned(dist0 + v * L) + B(static_cast<float>(jj)), x);
        (x * log2e).store_aligned(st + jj * M + v * L);
      }
  }

  // Online softmax, vertical over lanes: new max, rescale factor alpha, and
  // P = 2^(S - max) written over S. A lane whose max is still -inf (nothing
  // allowed yet) uses 0 as its reference so no -inf - -inf NaN appears.
  void softmax_update(int64_t n, B* m, B* l, B* alpha) {
    const B ninf(-std::numeric_limits<float>::infinity());
    float* st = s_.st.data();
    B mt[MV], ref[MV], sum[MV];
    for (int v = 0; v < MV; ++v) mt[v] = ninf;
    for (int64_t jj = 0; jj < n; ++jj)
      for (int v = 0; v < MV; ++v) mt[v] = xsimd::max(mt[v], B::load_aligned(st + jj * M + v * L));
    for (int v = 0; v < MV; ++v) {
      const B mnew = xsimd::max(m[v], mt[v]);
      ref[v] = xsimd::select(mnew == ninf, B(0.0f), mnew);
      alpha[v] = exp2_fast(m[v] - ref[v]);
      m[v] = mnew;
      sum[v] = B(0.0f);
    }
    for (int64_t jj = 0; jj < n; ++jj)
      for (int v = 0; v < MV; ++v) {
        const B e = exp2_fast(B::load_aligned(st + jj * M + v * L) - ref[v]);
        e.store_aligned(st + jj * M + v * L);
        sum[v] += e;
      }
    for (int v = 0; v < MV; ++v) l[v] = fmadd(l[v], alpha[v], sum[v]);
  }

  const AttentionParams<T>& p_;
  const Mask& mask_;
  Scratch& s_;
  const RopeFusion* rope_ = nullptr;
  bool relative_ = false;
  bool post_logits_ = false;
  bool preloaded_ = false;
  int64_t qpos_min_ = 0, qpos_max_ = 0;
  const BlockRows* br_ = nullptr;
  B m_[MV], l_[MV];
};

}  // namespace detail
}  // namespace cpu
}  // namespace attnkit
