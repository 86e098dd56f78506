// CPU forward pass: decomposition into (batch, KV head, head chunk, query
// block[, key chunk]) work items, prefill and split-KV decode, and writing
// the outputs. The arithmetic lives in block_runner.hpp / micro_kernels.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/error.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cpu/block_runner.hpp"
#include "attnkit/cpu/merge.hpp"
#include "attnkit/cpu/rope_fusion.hpp"
#include "attnkit/cpu/threading.hpp"
#include "attnkit/mask/traits.hpp"

namespace attnkit {
namespace cpu {

// Queries per sequence at or below which the split-KV decode path is used.
inline constexpr int64_t kDecodeMaxQueries = 16;
// Keys per split in decode. Fixed (not derived from the thread count) so
// results do not depend on it.
inline constexpr int64_t kDecodeKeysPerSplit = 1024;

namespace detail {

// How query rows are grouped into blocks of M lanes.
struct RowTiling {
  int64_t heads_per_block;  // query heads of one group per block
  int64_t head_chunks;      // group / heads_per_block
  int64_t tq;               // queries per block
  int64_t q_blocks;         // blocks along the query axis (for the longest sequence)
};

inline RowTiling make_tiling(int64_t rows, int64_t group, int64_t max_q) {
  RowTiling t;
  t.heads_per_block = std::min(group, rows);
  while (group % t.heads_per_block != 0) --t.heads_per_block;
  t.head_chunks = group / t.heads_per_block;
  t.tq = std::max<int64_t>(1, rows / t.heads_per_block);
  t.q_blocks = max_q > 0 ? (max_q + t.tq - 1) / t.tq : 0;
  return t;
}

// Finalises a block's rows: out = O / (l + sink), lse = (m + log2 l) ln 2.
template <class T, int M>
void write_rows(const AttentionParams<T>& p, const BlockRows& br, const float* ot, const float* m, const float* l) {
  const int64_t Dv = p.shape.v_head_dim;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < br.valid(); ++r) {
    const int64_t h = br.head[r], i = br.query[r];
    T* out = p.out_row(br.b, i, h);
    const bool any = l[r] > 0.0f;
    float denom = l[r];
    if (any && p.sink_logits) denom += std::exp2(p.sink_logits[h] * kLog2e - m[r]);
    const float inv = any ? 1.0f / denom : 0.0f;
    for (int64_t d = 0; d < Dv; ++d) out[d] = from_float<T>(ot[d * M + r] * inv);
    if (p.lse) *p.lse_ptr(br.b, i, h) = any ? (m[r] + std::log2(l[r])) * kLn2 : ninf;
  }
}

// Padded layouts: query rows past q_len(b) are outputs too: 0 and lse -inf.
template <class T>
void zero_padded_rows(const AttentionParams<T>& p) {
  const ProblemShape& s = p.shape;
  if (s.varlen()) return;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = s.q_len(b); i < s.q_capacity; ++i)
      for (int64_t h = 0; h < s.q_heads; ++h) {
        T* out = p.out_row(b, i, h);
        for (int64_t d = 0; d < s.v_head_dim; ++d) out[d] = from_float<T>(0.0f);
        if (p.lse) *p.lse_ptr(b, i, h) = -std::numeric_limits<float>::infinity();
      }
}

template <class B, int MV>
struct Worker {
  Scratch scratch;
  float m[Blocking<B, MV>::kRows];
  float l[Blocking<B, MV>::kRows];
};

template <class T, class B, int MV, class Mask>
void prefill(const AttentionParams<T>& p, const Mask& mask, int threads, const RopeFusion* rope) {
  using Runner = BlockRunner<T, B, MV, Mask>;
  constexpr int M = Runner::M;
  const ProblemShape& s = p.shape;
  const RowTiling t = make_tiling(M, s.group(), s.q_capacity);
  const int64_t per_seq = s.kv_heads * t.head_chunks * t.q_blocks;
  // Query blocks in reverse so the long rows of causal masks start first.
  parallel_for<Worker<B, MV>>(s.batch * per_seq, threads, [&](int64_t item, Worker<B, MV>& w) {
    const int64_t b = item / per_seq;
    int64_t rest = item % per_seq;
    const int64_t qb = t.q_blocks - 1 - rest % t.q_blocks;
    rest /= t.q_blocks;
    const int64_t kvh = rest / t.head_chunks;
    const int64_t h0 = kvh * s.group() + (rest % t.head_chunks) * t.heads_per_block;
    const int64_t i0 = qb * t.tq, lq = s.q_len(b);
    if (i0 >= lq) return;
    const BlockRows br = BlockRows::contiguous(b, kvh, h0, t.heads_per_block, i0, std::min(t.tq, lq - i0));
    Runner runner(p, mask, w.scratch, rope);
    runner.run(br, 0, s.kv_len(br.b), BlockResult{w.m, w.l});
    write_rows<T, M>(p, br, runner.ot(), w.m, w.l);
  });
}

// Split-KV decode: each (block, key split) item writes a normalised partial
// (out, lse); a second pass merges splits in a fixed order (DESIGN §6) and
// applies the sink logit once.
template <class T, class B, int MV, class Mask>
void decode(const AttentionParams<T>& p, const Mask& mask, int threads, const RopeFusion* rope) {
  using Runner = BlockRunner<T, B, MV, Mask>;
  constexpr int M = Runner::M;
  const ProblemShape& s = p.shape;
  const int64_t Dv = s.v_head_dim;
  const RowTiling t = make_tiling(M, s.group(), s.q_capacity);
  const int64_t splits = std::max<int64_t>(1, (s.kv_capacity + kDecodeKeysPerSplit - 1) / kDecodeKeysPerSplit);
  const int64_t blocks_per_seq = s.kv_heads * t.head_chunks * t.q_blocks;
  const int64_t blocks = s.batch * blocks_per_seq;
  std::vector<float> part_out(static_cast<size_t>(blocks * splits * M * Dv));
  std::vector<float> part_lse(static_cast<size_t>(blocks * splits * M), -std::numeric_limits<float>::infinity());

  auto block_rows = [&](int64_t blk, BlockRows& br) {
    const int64_t b = blk / blocks_per_seq;
    int64_t rest = blk % blocks_per_seq;
    const int64_t qb = rest % t.q_blocks;
    rest /= t.q_blocks;
    const int64_t kvh = rest / t.head_chunks;
    const int64_t h0 = kvh * s.group() + (rest % t.head_chunks) * t.heads_per_block;
    const int64_t i0 = qb * t.tq, lq = s.q_len(b);
    if (i0 >= lq) return false;
    br = BlockRows::contiguous(b, kvh, h0, t.heads_per_block, i0, std::min(t.tq, lq - i0));
    return true;
  };

  // Partial (out normalised by its own sum, lse) of one block over one split.
  auto store_partial = [&](const BlockRows& br, const float* ot, const float* m, const float* l, int64_t part) {
    float* po = &part_out[static_cast<size_t>(part * M * Dv)];
    float* pl = &part_lse[static_cast<size_t>(part * M)];
    for (int64_t r = 0; r < br.valid(); ++r) {
      const bool any = l[r] > 0.0f;
      const float inv = any ? 1.0f / l[r] : 0.0f;
      for (int64_t d = 0; d < Dv; ++d) po[r * Dv + d] = ot[d * M + r] * inv;
      pl[r] = any ? (m[r] + std::log2(l[r])) * kLn2 : -std::numeric_limits<float>::infinity();
    }
  };

  if (t.head_chunks == 1 && t.q_blocks == 1) {
    // Every KV head's rows fit one block: one item walks its key range across
    // all KV heads in step. In BSHD the heads of a key row are adjacent, so
    // the item consumes a contiguous window of the cache (hardware
    // prefetchers follow it) instead of 512-byte rows strided by 4 KiB.
    struct AllHeads {
      std::vector<Scratch> scratch;
      std::vector<BlockRows> rows;
      std::vector<float> m, l;
    };
    const int64_t Hkv = s.kv_heads;
    // Slice `part` of `parts` of the key rows [j0, j0 + n) of every head.
    auto prefetch_slice = [&](int64_t b, int64_t j0, int64_t n, int64_t part, int64_t parts) {
      const int64_t lo = j0 + n * part / parts, hi = j0 + n * (part + 1) / parts;
      for (int64_t j = lo; j < hi; ++j)
        for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
          const char* kr = reinterpret_cast<const char*>(p.k_row(b, j, kvh));
          const char* vr = reinterpret_cast<const char*>(p.v_row(b, j, kvh));
          for (int64_t off = 0; off < s.head_dim * int64_t(sizeof(T)); off += 64) __builtin_prefetch(kr + off, 0, 2);
          for (int64_t off = 0; off < Dv * int64_t(sizeof(T)); off += 64) __builtin_prefetch(vr + off, 0, 2);
        }
    };
    parallel_for<AllHeads>(s.batch * splits, threads, [&](int64_t item, AllHeads& w) {
      const int64_t b = item / splits, sp = item % splits;
      const int64_t lq = std::min(t.tq, s.q_len(b)), lk = s.kv_len(b);
      const int64_t jb = sp * kDecodeKeysPerSplit, je = std::min(lk, jb + kDecodeKeysPerSplit);
      if (lq <= 0 || jb >= je) return;
      w.scratch.resize(static_cast<size_t>(Hkv));
      w.rows.resize(static_cast<size_t>(Hkv));
      w.m.resize(static_cast<size_t>(Hkv * M));
      w.l.resize(static_cast<size_t>(Hkv * M));
      std::vector<Runner> runners;
      runners.reserve(static_cast<size_t>(Hkv));
      for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
        w.rows[kvh] = BlockRows::contiguous(b, kvh, kvh * s.group(), s.group(), 0, lq);
        runners.emplace_back(p, mask, w.scratch[kvh], rope);
        runners.back().begin(w.rows[kvh]);
      }
      for (auto& r : runners) r.set_preloaded(true);
      for (int64_t j0 = jb; j0 < je; j0 += Runner::N) {
        const int64_t n = std::min<int64_t>(Runner::N, je - j0);
        // Key row outer, head inner: one sequential pass over the cache.
        for (int64_t jj = 0; jj < n; ++jj)
          for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
            to_float_row(p.k_row(b, j0 + jj, kvh), runners[kvh].k_tile() + jj * s.head_dim, s.head_dim);
            to_float_row(p.v_row(b, j0 + jj, kvh), runners[kvh].v_tile() + jj * Dv, Dv);
          }
        // While the heads compute on this tile, pull the next tile's window of
        // the cache (contiguous in BSHD) toward L2, one slice per head.
        const int64_t next = std::min<int64_t>(Runner::N, je - j0 - n);
        for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
          if (next > 0) prefetch_slice(b, j0 + n, next, kvh, Hkv);
          runners[kvh].step(j0, n, je);
        }
      }
      for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
        runners[kvh].finish(BlockResult{&w.m[kvh * M], &w.l[kvh * M]});
        store_partial(w.rows[kvh], runners[kvh].ot(), &w.m[kvh * M], &w.l[kvh * M],
                      (b * blocks_per_seq + kvh) * splits + sp);
      }
    });
  } else {
    parallel_for<Worker<B, MV>>(blocks * splits, threads, [&](int64_t item, Worker<B, MV>& w) {
      const int64_t blk = item / splits, sp = item % splits;
      BlockRows br;
      if (!block_rows(blk, br)) return;
      const int64_t lk = s.kv_len(br.b);
      const int64_t jb = sp * kDecodeKeysPerSplit, je = std::min(lk, jb + kDecodeKeysPerSplit);
      if (jb >= je) return;  // lse stays -inf: this split contributes nothing
      Runner runner(p, mask, w.scratch, rope);
      runner.run(br, jb, je, BlockResult{w.m, w.l});
      store_partial(br, runner.ot(), w.m, w.l, item);
    });
  }

  parallel_for<std::vector<float>>(blocks, threads, [&](int64_t blk, std::vector<float>& row) {
    BlockRows br;
    if (!block_rows(blk, br)) return;
    row.resize(static_cast<size_t>(Dv));
    for (int64_t r = 0; r < br.valid(); ++r) {
      const int64_t h = br.head[r], i = br.query[r];
      const float* po = &part_out[static_cast<size_t>((blk * splits * M + r) * Dv)];
      const float* pl = &part_lse[static_cast<size_t>(blk * splits * M + r)];
      const float lse = ::attnkit::detail::merge_rows(po, M * Dv, pl, M, splits, Dv, row.data());
      float scale = 1.0f;
      if (p.sink_logits && lse != -std::numeric_limits<float>::infinity())
        scale = 1.0f / (1.0f + std::exp(p.sink_logits[h] - lse));
      T* out = p.out_row(br.b, i, h);
      for (int64_t d = 0; d < Dv; ++d) out[d] = from_float<T>(row[d] * scale);
      if (p.lse) *p.lse_ptr(br.b, i, h) = lse;
    }
  });
}

}  // namespace detail

// Runs attention on validated params (see attention.hpp, which validates).
template <class T, class Mask>
void attention_forward(const AttentionParams<T>& p, const Mask& mask, const AttentionOptions& o) {
  const int threads = resolve_threads(o.num_threads);
  // Everything that can throw happens before the first write.
  const detail::RopeFusion rope = detail::make_rope_fusion(p, o, threads);
  if (rope.relative() && !is_causal_type<Mask>::value)
    ::attnkit::detail::fail(
        "ReRoPE / Leaky ReRoPE clip the relative position p - j and need a causal-type mask (CausalMask, "
        "SlidingWindowMask, SinkWindowMask, or a conjunction with one of them)");
  const detail::RopeFusion* rp = rope.enabled() ? &rope : nullptr;
  const ProblemShape& s = p.shape;
  detail::zero_padded_rows(p);
  if (s.batch == 0 || s.q_capacity == 0) return;
  if (s.q_capacity <= kDecodeMaxQueries) {
    const int64_t rows = s.group() * s.q_capacity;
    if (rows <= 4 && Batch4::size == 4)
      detail::decode<T, Batch4, 1>(p, mask, threads, rp);
    else if (rows <= 8 && Batch8::size == 8)
      detail::decode<T, Batch8, 1>(p, mask, threads, rp);
    else if (rows <= static_cast<int64_t>(WideBatch::size))
      detail::decode<T, WideBatch, 1>(p, mask, threads, rp);
    else
      detail::decode<T, WideBatch, 2>(p, mask, threads, rp);
    return;
  }
  detail::prefill<T, WideBatch, detail::kPrefillVectors>(p, mask, threads, rp);
}

}  // namespace cpu
}  // namespace attnkit
