// MoBA's gate and block selection (DESIGN §5), exposed for inspection and as
// a mask functor for the reference.
//
// For a query row at position p (DESIGN §2: bottom-right alignment by
// default, top-left when asked; explicit RoPE positions do not move it):
//   - it owns block c = p / Bs, always taken, causal inside (keys j <= p);
//   - every block c' < c that holds a valid key is a candidate ("fully in the
//     past": all its keys sit before c * Bs <= p);
//   - gate score s(q, c') = q . mean(k over block c'), with the query head's
//     own kv head's means under GQA, computed in fp32 from *unscaled* q: the
//     softmax scale is a positive factor common to every candidate, so it
//     cannot change the ranking (a negative scale is not meaningful here);
//     softcap is monotone and ALiBi is ignored by the gate;
//   - the top_k - 1 candidates with the highest score are added; equal scores
//     go to the lower block index; with fewer candidates, all are taken.
// Rows with p < 0 (bottom-right alignment with more queries than keys) take
// no block: out 0, lse -inf, like every row with no allowed key.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "attnkit/core/error.hpp"
#include "attnkit/core/macros.hpp"
#include "attnkit/core/make_params.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cpu/simd.hpp"
#include "attnkit/cpu/threading.hpp"
#include "attnkit/mask/tile.hpp"
#include "attnkit/moba/block_means.hpp"
#include "attnkit/moba/config.hpp"

// Full unrolling keeps the gate's accumulator arrays in registers.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define ATTNKIT_MOBA_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define ATTNKIT_MOBA_UNROLL _Pragma("unroll")
#else
#define ATTNKIT_MOBA_UNROLL
#endif

namespace attnkit {

namespace moba {

// Own block of a query at position `pos`, or -1 when it sees no key.
ATTNKIT_HDI int64_t own_block(int64_t pos, int64_t block_size) { return pos < 0 ? -1 : pos / block_size; }

// Past blocks a query owning block `own` may choose: c' < own with at least
// one of the sequence's kv_len keys.
ATTNKIT_HDI int64_t num_candidates(int64_t own, int64_t block_size, int64_t kv_len) {
  const int64_t kv_blocks = (kv_len + block_size - 1) / block_size;
  return own < 0 ? 0 : (own < kv_blocks ? own : kv_blocks);
}

// A running top-`cap` list by score, highest first; candidates must arrive in
// ascending block order so that an equal score never displaces an earlier
// (lower) block. Host and device.
struct TopList {
  ATTNKIT_HDI static void insert(float score, int32_t block, float* best_score, int32_t* best_block, int64_t& n,
                                 int64_t cap) {
    if (cap <= 0 || (n == cap && !(score > best_score[n - 1]))) return;  // NaN scores are never taken over a number
    int64_t pos = n < cap ? n : cap - 1;
    while (pos > 0 && score > best_score[pos - 1]) {
      best_score[pos] = best_score[pos - 1];
      best_block[pos] = best_block[pos - 1];
      --pos;
    }
    best_score[pos] = score;
    best_block[pos] = block;
    if (n < cap) ++n;
  }
};

// Writes the chosen blocks of one row in ascending order: the n past blocks
// (any order in `past`, sorted here) then the own block. Returns the count.
ATTNKIT_HDI int64_t finish_row(int32_t* past, int64_t n, int64_t own, int32_t* out) {
  for (int64_t a = 1; a < n; ++a) {  // insertion sort: n = top_k - 1 is small
    const int32_t x = past[a];
    int64_t b = a;
    while (b > 0 && past[b - 1] > x) {
      past[b] = past[b - 1];
      --b;
    }
    past[b] = x;
  }
  for (int64_t a = 0; a < n; ++a) out[a] = past[a];
  out[n] = static_cast<int32_t>(own);
  return n + 1;
}

}  // namespace moba

// allowed(i, j) for the selection: block(j) chosen for (b, h, i) and
// (block(j) < own block, or j <= p inside the own block). A POD functor over
// the selection's arrays, so the fp64 reference (or any kernel) can run under
// exactly the mask MoBA implies. Tiles are classified only coarsely (Empty
// beyond the causal frontier, else Partial): it is an oracle, not a fast path.
struct MobaSelectionMask : MaskBase<MobaSelectionMask> {
  const int32_t* blocks = nullptr;  // [rows][q_heads][slots], ascending
  const int32_t* count = nullptr;   // [rows][q_heads]
  const int32_t* cu_q = nullptr;    // varlen: row of (b, i) is cu_q[b] + i
  int64_t slots = 1;
  int64_t block_size = 1;
  int64_t q_heads = 1;
  int64_t q_capacity = 0;  // padded: row of (b, i) is b * q_capacity + i

  ATTNKIT_HDI int64_t index(const SeqCtx& s, int64_t i) const {
    const int64_t row = cu_q ? int64_t(cu_q[s.batch]) + i : s.batch * q_capacity + i;
    return row * q_heads + s.head;
  }
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const {
    const int64_t p = s.pos(i);
    if (j > p) return false;
    const int64_t idx = index(s, i);
    const int64_t n = count[idx];
    const int64_t cj = j / block_size;
    const int32_t* list = blocks + idx * slots;
    for (int64_t a = 0; a < n; ++a)
      if (list[a] == cj) return true;
    return false;
  }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t, int64_t i1, int64_t j0, int64_t) const {
    return j0 > s.pos(i1 - 1) ? TileKind::Empty : TileKind::Partial;
  }
};

// The blocks every (sequence, query head, query row) chose.
struct MobaSelection {
  int64_t rows = 0;  // output rows: padded B * Sq, varlen total_q
  int64_t q_heads = 0;
  int64_t slots = 0;  // list capacity per row: min(top_k, blocks a row can see)
  int64_t block_size = 1;
  int64_t q_capacity = 0;       // padded Sq (0 for varlen)
  std::vector<int32_t> cu_q;    // varlen: a copy of cu_seqlens_q; empty for padded
  std::vector<int32_t> blocks;  // [rows][q_heads][slots], ascending, -1 past count
  std::vector<int32_t> count;   // [rows][q_heads]: 0 for padding rows and rows with p < 0

  int64_t row_of(int64_t b, int64_t i) const {
    return cu_q.empty() ? b * q_capacity + i : int64_t(cu_q[static_cast<size_t>(b)]) + i;
  }
  // The chosen blocks of query row i of sequence b, query head h, ascending
  // (the last one is the own block).
  std::vector<int32_t> chosen(int64_t b, int64_t h, int64_t i) const {
    const int64_t idx = row_of(b, i) * q_heads + h;
    const int32_t* l = &blocks[static_cast<size_t>(idx * slots)];
    return std::vector<int32_t>(l, l + count[static_cast<size_t>(idx)]);
  }
  MobaSelectionMask mask() const {
    MobaSelectionMask m;
    m.blocks = blocks.data();
    m.count = count.data();
    m.cu_q = cu_q.empty() ? nullptr : cu_q.data();
    m.slots = slots;
    m.block_size = block_size;
    m.q_heads = q_heads;
    m.q_capacity = q_capacity;
    return m;
  }
};

namespace moba {
namespace detail {

using attnkit::detail::concat;
using attnkit::detail::require;

// Checks that `means` describe exactly the keys of `p` under `cfg`.
template <class T>
void check_means(const AttentionParams<T>& p, const MobaMeansView& m, const MobaConfig& cfg) {
  const ProblemShape& s = p.shape;
  require(m.batch == s.batch, "moba means batch", m.batch, concat("must equal the batch size (", s.batch, ")"));
  require(m.kv_heads == s.kv_heads, "moba means kv_heads", m.kv_heads,
          concat("must equal num_kv_heads (", s.kv_heads, ")"));
  require(m.head_dim == s.head_dim, "moba means head_dim", m.head_dim,
          concat("must equal the head dim (", s.head_dim, ")"));
  require(m.block_size == cfg.block_size, "moba means block_size", m.block_size,
          concat("must equal the config's block_size (", cfg.block_size, ")"));
  for (int64_t b = 0; b < s.batch; ++b)
    if (m.tokens[b] != s.kv_len(b))
      attnkit::detail::fail_arg(concat("moba means tokens of sequence ", b).c_str(), m.tokens[b],
                                concat("must equal its kv length (", s.kv_len(b), "); update() the means first"));
}

// Largest number of blocks a row can choose (list capacity).
inline int64_t selection_slots(const ProblemShape& s, const MobaConfig& cfg) {
  const int64_t span = std::max(s.q_capacity, s.kv_capacity);
  const int64_t max_blocks = std::max<int64_t>(1, (span + cfg.block_size - 1) / cfg.block_size);
  return std::min(cfg.top_k, max_blocks);
}

// Gate scores of R query rows (fp32, unscaled) against blocks [0, nc):
// score[r][c] = sum_d q[r][d] * mean[d][c]. Every (row, block) sum runs in
// the same order (d ascending, fused multiply-adds) whatever R and the
// vector position, so equal means give bit-equal scores (exact ties) and
// results do not depend on how rows are grouped. R rows share each load of
// the means (GQA: the heads of one query read the same kv head's means).
template <int R>
void gate_scores(const float* const* q, int64_t D, const float* mean_t, int64_t stride, int64_t nc,
                 float* const* score) {
  using B = cpu::WideBatch;
  constexpr int64_t L = static_cast<int64_t>(B::size);
  constexpr int NV = cpu::kVectorRegisters >= 32 ? 4 : 2;  // vectors of blocks per pass
  const int64_t nv = (nc + L - 1) / L;
  int64_t v = 0;
  for (; v + NV <= nv; v += NV) {
    B acc[R][NV];
    ATTNKIT_MOBA_UNROLL
    for (int r = 0; r < R; ++r) ATTNKIT_MOBA_UNROLL
    for (int u = 0; u < NV; ++u) acc[r][u] = B(0.0f);
    const float* m = mean_t + v * L;
    for (int64_t d = 0; d < D; ++d) {
      B mv[NV];
      ATTNKIT_MOBA_UNROLL
      for (int u = 0; u < NV; ++u) mv[u] = B::load_unaligned(m + d * stride + u * L);
      ATTNKIT_MOBA_UNROLL
      for (int r = 0; r < R; ++r) {
        const B qd(q[r][d]);
        ATTNKIT_MOBA_UNROLL
        for (int u = 0; u < NV; ++u) acc[r][u] = xsimd::fma(qd, mv[u], acc[r][u]);
      }
    }
    ATTNKIT_MOBA_UNROLL
    for (int r = 0; r < R; ++r) ATTNKIT_MOBA_UNROLL
    for (int u = 0; u < NV; ++u) acc[r][u].store_unaligned(score[r] + (v + u) * L);
  }
  for (; v < nv; ++v) {
    B acc[R];
    ATTNKIT_MOBA_UNROLL
    for (int r = 0; r < R; ++r) acc[r] = B(0.0f);
    const float* m = mean_t + v * L;
    for (int64_t d = 0; d < D; ++d) {
      const B mv = B::load_unaligned(m + d * stride);
      ATTNKIT_MOBA_UNROLL
      for (int r = 0; r < R; ++r) acc[r] = xsimd::fma(B(q[r][d]), mv, acc[r]);
    }
    ATTNKIT_MOBA_UNROLL
    for (int r = 0; r < R; ++r) acc[r].store_unaligned(score[r] + v * L);
  }
}

struct GateScratch {
  std::vector<float> q, score, best_score;
  std::vector<int32_t> best_block;
};

// Fills sel (already sized) for every valid query row of p. Work items are
// (sequence, kv head, tile of queries); the heads of one query are scored
// together (up to 4 at a time, sharing the loads of the block means).
template <class T>
void select_rows(const AttentionParams<T>& p, const MobaMeansView& mv, const MobaConfig& cfg, int threads,
                 MobaSelection& sel) {
  const ProblemShape& s = p.shape;
  const int64_t D = s.head_dim, Hq = s.q_heads, group = s.group(), slots = sel.slots;
  constexpr int64_t kTile = 64, kR = 4;
  const int64_t tiles = (s.q_capacity + kTile - 1) / kTile;
  const int64_t per_seq = s.kv_heads * tiles;
  const int64_t sstride = mv.stride + 16;
  cpu::parallel_for<GateScratch>(s.batch * per_seq, threads, [&](int64_t item, GateScratch& g) {
    const int64_t b = item / per_seq, kvh = (item % per_seq) / tiles, t = item % tiles;
    const int64_t lq = s.q_len(b), lk = s.kv_len(b);
    const int64_t i0 = t * kTile, i1 = std::min(lq, i0 + kTile);
    if (i0 >= i1) return;
    g.q.resize(static_cast<size_t>(kR * D));
    g.score.resize(static_cast<size_t>(kR * sstride));
    g.best_score.resize(static_cast<size_t>(slots));
    g.best_block.resize(static_cast<size_t>(slots));
    const SeqCtx ctx = s.ctx(b, 0);
    const float* mean_t = mv.of(b, kvh);
    const float* qp[kR];
    float* sp[kR];
    for (int64_t r = 0; r < kR; ++r) {
      qp[r] = g.q.data() + r * D;
      sp[r] = g.score.data() + r * sstride;
    }
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t own = own_block(ctx.pos(i), cfg.block_size);
      const int64_t nc = num_candidates(own, cfg.block_size, lk);
      const int64_t want = own < 0 ? 0 : std::min<int64_t>(cfg.top_k - 1, nc);
      const bool score = want > 0 && want < nc;
      const int64_t row = sel.row_of(b, i);
      for (int64_t h0 = kvh * group; h0 < (kvh + 1) * group; h0 += kR) {
        const int64_t nr = std::min<int64_t>(kR, (kvh + 1) * group - h0);
        if (score) {
          for (int64_t r = 0; r < nr; ++r) {
            const T* qr = p.q_row(b, i, h0 + r);
            float* qf = g.q.data() + r * D;
            for (int64_t d = 0; d < D; ++d) qf[d] = to_float(qr[d]);
          }
          switch (nr) {
            case 4:
              gate_scores<4>(qp, D, mean_t, mv.stride, nc, sp);
              break;
            case 3:
              gate_scores<3>(qp, D, mean_t, mv.stride, nc, sp);
              break;
            case 2:
              gate_scores<2>(qp, D, mean_t, mv.stride, nc, sp);
              break;
            default:
              gate_scores<1>(qp, D, mean_t, mv.stride, nc, sp);
              break;
          }
        }
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t idx = row * Hq + h0 + r;
          int32_t& cnt = sel.count[static_cast<size_t>(idx)];
          if (own < 0) {
            cnt = 0;
            continue;
          }
          int32_t* best = g.best_block.data();
          int64_t n = 0;
          if (!score) {  // every candidate (or none) is taken: no scores needed
            for (int64_t c = 0; c < want; ++c) best[n++] = static_cast<int32_t>(c);
          } else {
            for (int64_t c = 0; c < nc; ++c)
              TopList::insert(sp[r][c], static_cast<int32_t>(c), g.best_score.data(), best, n, want);
          }
          cnt = static_cast<int32_t>(finish_row(best, n, own, &sel.blocks[static_cast<size_t>(idx * slots)]));
        }
      }
    }
  });
}

template <class T>
MobaSelection make_selection(const AttentionParams<T>& p, const MobaConfig& cfg) {
  const ProblemShape& s = p.shape;
  MobaSelection sel;
  sel.rows = s.varlen() ? s.total_q : s.batch * s.q_capacity;
  sel.q_heads = s.q_heads;
  sel.slots = selection_slots(s, cfg);
  sel.block_size = cfg.block_size;
  if (s.varlen()) {
    sel.cu_q.assign(s.cu_q, s.cu_q + s.batch + 1);
  } else {
    sel.q_capacity = s.q_capacity;
  }
  sel.blocks.assign(static_cast<size_t>(sel.rows * sel.q_heads * sel.slots), -1);
  sel.count.assign(static_cast<size_t>(sel.rows * sel.q_heads), 0);
  return sel;
}

template <class T>
MobaSelection select(const AttentionParams<T>& p, const MobaConfig& cfg, const MobaMeansView& mv, int threads) {
  MobaSelection sel = make_selection(p, cfg);
  select_rows(p, mv, cfg, threads, sel);
  return sel;
}

}  // namespace detail
}  // namespace moba

}  // namespace attnkit
