// MoBA on the CPU: attention over the selected blocks only, cost
// proportional to top_k * Bs per query row (not to Sk).
//
// The work is organised by key block, as in MoBA's reference implementation
// (which runs FlashAttention's varlen forward once over the own blocks and
// once over the gathered selected blocks): for every (sequence, kv head, key
// block) the (query head, query row) lanes that chose that block are gathered
// into BlockRows of up to M lanes and attended over the block with the CPU
// kernel's BlockRunner, non-causally for a past block and causally for the
// lanes' own block. Every part leaves a normalised (out, lse) in a slot fixed
// by the row's sorted block list; a second pass merges each row's parts in
// that order with the library's LSE merge (DESIGN §6). Slots, lane batches
// and chunks never depend on the thread count, and a lane's arithmetic does
// not depend on the other lanes of its batch, so results are bit-identical
// whatever the number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/params.hpp"
#include "attnkit/cpu/block_runner.hpp"
#include "attnkit/cpu/forward.hpp"
#include "attnkit/cpu/merge.hpp"
#include "attnkit/cpu/threading.hpp"
#include "attnkit/mask/basic.hpp"
#include "attnkit/moba/config.hpp"
#include "attnkit/moba/selection.hpp"

namespace attnkit {
namespace moba {
namespace detail {

// Partial results are kept for a chunk of query rows at a time; this bounds
// that buffer (floats): 16 Mi floats = 64 MiB.
inline constexpr int64_t kChunkFloats = int64_t(1) << 24;

struct Lane {
  int32_t head;
  int64_t query;
  int64_t part;  // index of this (row, head, slot) in the chunk's part buffers
};

// One BlockRunner call: lanes [lane0, lane0 + lanes) of the chunk's lane list
// attend block `block` of sequence b, kv head kvh (causally when own).
struct Item {
  int64_t b, kvh, block;
  bool own;
  int64_t lane0, lanes;
};

// Sequence and query index of each output row.
template <class T>
void row_owners(const AttentionParams<T>& p, int64_t rows, std::vector<int32_t>& seq) {
  const ProblemShape& s = p.shape;
  seq.resize(static_cast<size_t>(rows));
  if (!s.varlen()) {
    for (int64_t r = 0; r < rows; ++r) seq[static_cast<size_t>(r)] = static_cast<int32_t>(r / s.q_capacity);
    return;
  }
  std::fill(seq.begin(), seq.end(), -1);  // rows past cu_seqlens_q[B] belong to nobody
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t r = s.cu_q[b]; r < s.cu_q[b + 1]; ++r) seq[static_cast<size_t>(r)] = static_cast<int32_t>(b);
}

// Gathers the lanes of rows [r0, r1) by (sequence, kv head, block, own) and
// cuts them into items of at most M lanes whose heads span at most M (the
// runner keeps one mask context per head of the span).
template <class T>
void build_items(const AttentionParams<T>& p, const MobaSelection& sel, const std::vector<int32_t>& seq, int64_t r0,
                 int64_t r1, int64_t M, std::vector<Lane>& lanes, std::vector<Item>& items) {
  const ProblemShape& s = p.shape;
  const int64_t Hq = s.q_heads, group = s.group(), slots = sel.slots;
  lanes.clear();
  items.clear();
  std::vector<int64_t> start;
  int64_t r = r0;
  while (r < r1) {
    const int32_t b = seq[static_cast<size_t>(r)];
    int64_t re = r + 1;
    while (re < r1 && seq[static_cast<size_t>(re)] == b) ++re;
    if (b < 0) {
      r = re;
      continue;
    }
    // Rows [r, re) of sequence b: queries [i_a, i_b) (padded rows excluded).
    const int64_t base = s.varlen() ? s.cu_q[b] : b * s.q_capacity;
    const int64_t ia = r - base, ib = std::min(re - base, s.q_len(b));
    int64_t max_block = -1;
    for (int64_t i = ia; i < ib; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t idx = (base + i) * Hq + h;
        const int64_t n = sel.count[static_cast<size_t>(idx)];
        if (n > 0) max_block = std::max<int64_t>(max_block, sel.blocks[static_cast<size_t>(idx * slots + n - 1)]);
      }
    const int64_t keys = 2 * (max_block + 1);  // key 2c: past block c; 2c + 1: own block c
    for (int64_t kvh = 0; kvh < s.kv_heads && keys > 0; ++kvh) {
      // Counting sort of lanes by key; within a key, query-major then head.
      start.assign(static_cast<size_t>(keys + 1), 0);
      for (int64_t i = ia; i < ib; ++i)
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const int64_t idx = (base + i) * Hq + h;
          const int64_t n = sel.count[static_cast<size_t>(idx)];
          for (int64_t a = 0; a < n; ++a) {
            const int64_t c = sel.blocks[static_cast<size_t>(idx * slots + a)];
            ++start[static_cast<size_t>(2 * c + (a == n - 1 ? 1 : 0) + 1)];
          }
        }
      for (int64_t key = 0; key < keys; ++key) start[static_cast<size_t>(key + 1)] += start[static_cast<size_t>(key)];
      const int64_t off = static_cast<int64_t>(lanes.size());
      lanes.resize(static_cast<size_t>(off + start[static_cast<size_t>(keys)]));
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t i = ia; i < ib; ++i)
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          const int64_t idx = (base + i) * Hq + h;
          const int64_t n = sel.count[static_cast<size_t>(idx)];
          for (int64_t a = 0; a < n; ++a) {
            const int64_t c = sel.blocks[static_cast<size_t>(idx * slots + a)];
            const int64_t key = 2 * c + (a == n - 1 ? 1 : 0);
            Lane& l = lanes[static_cast<size_t>(off + fill[static_cast<size_t>(key)]++)];
            l.head = static_cast<int32_t>(h);
            l.query = i;
            l.part = ((base + i - r0) * Hq + h) * slots + a;
          }
        }
      for (int64_t key = 0; key < keys; ++key) {
        const int64_t kb = start[static_cast<size_t>(key)], ke = start[static_cast<size_t>(key + 1)];
        int64_t a = kb;
        while (a < ke) {
          int64_t e = a, hlo = lanes[static_cast<size_t>(off + a)].head, hhi = hlo;
          while (e < ke && e - a < M) {
            const int64_t h = lanes[static_cast<size_t>(off + e)].head;
            const int64_t lo = std::min(hlo, h), hi = std::max(hhi, h);
            if (hi - lo + 1 > M) break;
            hlo = lo;
            hhi = hi;
            ++e;
          }
          items.push_back(Item{b, kvh, key / 2, (key % 2) == 1, off + a, e - a});
          a = e;
        }
      }
    }
    r = re;
  }
}

template <class T, class B, int MV>
void forward_impl(const AttentionParams<T>& p, const MobaConfig& cfg, const MobaSelection& sel, int threads) {
  using FullRunner = cpu::detail::BlockRunner<T, B, MV, FullMask>;
  using CausalRunner = cpu::detail::BlockRunner<T, B, MV, CausalMask>;
  using Worker = cpu::detail::Worker<B, MV>;
  constexpr int M = FullRunner::M;
  const ProblemShape& s = p.shape;
  const int64_t Hq = s.q_heads, Dv = s.v_head_dim, slots = sel.slots, Bs = cfg.block_size;
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t rows = sel.rows;
  if (rows == 0) return;
  const int64_t chunk = std::max<int64_t>(1, kChunkFloats / (Hq * slots * (Dv + 1)));
  std::vector<int32_t> seq;
  row_owners(p, rows, seq);
  std::vector<float> part_out(static_cast<size_t>(std::min(chunk, rows) * Hq * slots * Dv));
  std::vector<float> part_lse(static_cast<size_t>(std::min(chunk, rows) * Hq * slots));
  std::vector<Lane> lanes;
  std::vector<Item> items;
  const FullMask full;
  const CausalMask causal;

  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    build_items(p, sel, seq, r0, r1, M, lanes, items);
    std::fill(part_lse.begin(), part_lse.begin() + (r1 - r0) * Hq * slots, ninf);

    cpu::parallel_for<Worker>(static_cast<int64_t>(items.size()), threads, [&](int64_t n, Worker& w) {
      const Item& it = items[static_cast<size_t>(n)];
      const int64_t lk = s.kv_len(it.b);
      const int64_t jb = it.block * Bs, je = std::min(lk, jb + Bs);
      if (jb >= je) return;  // an own block past the last key: the part stays absent (lse -inf)
      cpu::detail::BlockRows br;
      br.b = it.b;
      br.kvh = it.kvh;
      br.count = it.lanes;
      br.h_lo = br.i_lo = std::numeric_limits<int64_t>::max();
      br.h_hi = br.i_hi = std::numeric_limits<int64_t>::min();
      for (int64_t a = 0; a < it.lanes; ++a) {
        const Lane& l = lanes[static_cast<size_t>(it.lane0 + a)];
        br.head[a] = l.head;
        br.query[a] = l.query;
        br.h_lo = std::min<int64_t>(br.h_lo, l.head);
        br.h_hi = std::max<int64_t>(br.h_hi, l.head + 1);
        br.i_lo = std::min(br.i_lo, l.query);
        br.i_hi = std::max(br.i_hi, l.query + 1);
      }
      const float* ot;
      if (it.own) {
        CausalRunner runner(p, causal, w.scratch);
        runner.run(br, jb, je, cpu::detail::BlockResult{w.m, w.l});
        ot = runner.ot();
      } else {
        FullRunner runner(p, full, w.scratch);
        runner.run(br, jb, je, cpu::detail::BlockResult{w.m, w.l});
        ot = runner.ot();
      }
      for (int64_t a = 0; a < it.lanes; ++a) {
        const int64_t part = lanes[static_cast<size_t>(it.lane0 + a)].part;
        const bool any = w.l[a] > 0.0f;
        const float inv = any ? 1.0f / w.l[a] : 0.0f;
        float* po = &part_out[static_cast<size_t>(part * Dv)];
        for (int64_t d = 0; d < Dv; ++d) po[d] = ot[d * M + a] * inv;
        part_lse[static_cast<size_t>(part)] = any ? (w.m[a] + std::log2(w.l[a])) * cpu::kLn2 : ninf;
      }
    });

    // Merge each row's parts in slot (= ascending block) order.
    cpu::parallel_for<std::vector<float>>(r1 - r0, threads, [&](int64_t lr, std::vector<float>& buf) {
      const int64_t row = r0 + lr;
      const int32_t b = seq[static_cast<size_t>(row)];
      if (b < 0) return;
      const int64_t i = row - (s.varlen() ? s.cu_q[b] : b * s.q_capacity);
      if (i >= s.q_len(b)) return;  // padding row: zeroed already
      buf.resize(static_cast<size_t>(Dv));
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t n = sel.count[static_cast<size_t>(row * Hq + h)];
        const int64_t part0 = (lr * Hq + h) * slots;
        const float lse = ::attnkit::detail::merge_rows(&part_out[static_cast<size_t>(part0 * Dv)], Dv,
                                                        &part_lse[static_cast<size_t>(part0)], 1, n, Dv, buf.data());
        float scale = 1.0f;
        if (p.sink_logits && lse != ninf) scale = 1.0f / (1.0f + std::exp(p.sink_logits[h] - lse));
        T* out = p.out_row(b, i, h);
        for (int64_t d = 0; d < Dv; ++d) out[d] = from_float<T>(buf[static_cast<size_t>(d)] * scale);
        if (p.lse) *p.lse_ptr(b, i, h) = lse;
      }
    });
  }
}

// Attention over the selection `sel` (from select()) on validated params.
template <class T>
void forward(const AttentionParams<T>& p, const MobaConfig& cfg, const MobaSelection& sel, int threads) {
  const ProblemShape& s = p.shape;
  cpu::detail::zero_padded_rows(p);
  if (s.batch == 0 || s.q_capacity == 0) return;
  if (s.q_capacity <= cpu::kDecodeMaxQueries) {
    // Few rows per block: narrow batches waste fewer lanes.
    const int64_t rows = s.group() * s.q_capacity;
    if (rows <= 4 && cpu::Batch4::size == 4)
      forward_impl<T, cpu::Batch4, 1>(p, cfg, sel, threads);
    else if (rows <= 8 && cpu::Batch8::size == 8)
      forward_impl<T, cpu::Batch8, 1>(p, cfg, sel, threads);
    else
      forward_impl<T, cpu::WideBatch, 1>(p, cfg, sel, threads);
    return;
  }
  forward_impl<T, cpu::WideBatch, 2>(p, cfg, sel, threads);
}

}  // namespace detail
}  // namespace moba
}  // namespace attnkit
