// MoBA on the GPU (DESIGN §5), organised like MoBA's reference implementation:
//
//   1. block means, then the gate picks each lane's top_k - 1 past blocks
//      (cuda_kernels.cuh), counting how many lanes chose every key block;
//   2. the host reads those counts (the one synchronisation of a call) and
//      lays the lanes out list by list, one list per (sequence, kv head,
//      block): the lanes of a GQA group share their blocks' K/V tiles;
//   3. the library's flash kernel runs each chunk of lists as one varlen
//      call: a list is a "sequence" of its lanes' gathered query rows against
//      its block's keys (a head-major copy of k and v), no mask inside;
//   4. the own block runs as a second flash call on the original layout
//      under OwnBlockMask (causal inside the block);
//   5. every lane's parts are merged through the LSE (DESIGN §6) in ascending
//      block order, the own block last, as on the CPU.
//
// Cost: the gate reads the means (Sk / Bs per lane), the attention top_k * Bs
// keys per lane; memory beyond the inputs is O(lanes * (slots + D)) plus one
// chunk of gathered rows (bounded by chunk_entries()) and a copy of k and v.
// ALiBi is rejected here: a gathered row no longer knows its position inside
// the flash call, and the bias needs it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "attnkit/core/error.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/dispatch.cuh"
#include "attnkit/cuda/launch.cuh"
#include "attnkit/cuda/rope_prepass.cuh"
#include "attnkit/moba/config.hpp"
#include "attnkit/moba/cuda_kernels.cuh"
#include "attnkit/moba/own_block_mask.hpp"
#include "attnkit/moba/selection.hpp"
#include "attnkit/rope/frequencies.hpp"

namespace attnkit::moba::cuda {

namespace detail {

using attnkit::cuda::detail::check;
using attnkit::cuda::detail::check_launch;

// Gathered query rows per flash call: a chunk of lists holds at most this
// many entries (one list may exceed it alone). 0 = the default, 2 GiB of
// gathered rows; tests set it small to run the multi-chunk path.
inline int64_t& chunk_entries_override() {
  static int64_t n = 0;
  return n;
}
inline int64_t chunk_entries(int64_t row_bytes) {
  const int64_t n = chunk_entries_override();
  return n > 0 ? n : std::max<int64_t>(1, (int64_t(1) << 31) / row_bytes);
}

// A stream-ordered device buffer, freed on the same stream when it goes out
// of scope (the kernels that use it are queued before the free). It comes
// from the library's workspace pool, which keeps its memory between calls:
// re-mapping a MoBA call's workspace (gigabytes at long contexts) would
// otherwise cost milliseconds per call. attnkit::cuda::trim_workspace()
// hands it back.
template <class X>
class StreamBuf {
 public:
  StreamBuf() = default;
  StreamBuf(size_t n, cudaStream_t s) : stream_(s) {
    check(cudaMallocFromPoolAsync(reinterpret_cast<void**>(&ptr_), std::max<size_t>(n, 1) * sizeof(X),
                                  attnkit::cuda::detail::workspace_pool(), s),
          "cudaMallocFromPoolAsync (MoBA workspace)");
  }
  StreamBuf(const StreamBuf&) = delete;
  StreamBuf& operator=(const StreamBuf&) = delete;
  StreamBuf& operator=(StreamBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(stream_, o.stream_);
    return *this;
  }
  ~StreamBuf() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);
  }
  X* get() const { return ptr_; }

 private:
  X* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

template <class Kernel>
void allow_dynamic_smem(Kernel k, size_t bytes) {
  if (bytes > 32 * 1024)
    check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute (MoBA gate)");
}

inline unsigned grid_dim(int64_t n, int64_t per) { return static_cast<unsigned>((n + per - 1) / per); }

// Means of blocks [first, last) of every (sequence, kv head) into a.means.
template <class T>
void launch_block_means(const MobaArgs<T>& a, int64_t first, int64_t last, cudaStream_t stream) {
  const ProblemShape& s = a.p.shape;
  if (last <= first || s.batch == 0 || s.kv_heads == 0) return;
  const dim3 grid(static_cast<unsigned>(last - first), static_cast<unsigned>(s.kv_heads),
                  static_cast<unsigned>(s.batch));
  const dim3 block(static_cast<unsigned>(s.head_dim), kMeanSplit);
  block_means_kernel<T><<<grid, block, kMeanSplit * s.head_dim * sizeof(float), stream>>>(a, first);
  check_launch("moba block_means_kernel");
}

}  // namespace detail

// Block means kept on the device across decode steps (the GPU counterpart of
// MobaBlockMeans): after appending keys to a padded cache, update() recomputes
// only the blocks the new keys touch (the last partial block and the new
// ones), with the same summation order as a fresh computation, so results are
// bit-identical to recomputing. Pass it to moba_attention(); the means must
// cover exactly kv_len(b) keys of every sequence (checked), of the keys as
// the gate sees them (store rotated keys in the cache when using RoPE).
class MobaDeviceMeans {
 public:
  MobaDeviceMeans(int64_t batch, int64_t kv_heads, int64_t head_dim, int64_t block_size, int64_t capacity_tokens)
      : batch_(batch), heads_(kv_heads), dim_(head_dim), bs_(block_size) {
    attnkit::detail::require(batch >= 1, "batch", batch, "must be >= 1");
    attnkit::detail::require(kv_heads >= 1, "num_kv_heads", kv_heads, "must be >= 1");
    attnkit::detail::require(head_dim == 64 || head_dim == 96 || head_dim == 128 || head_dim == 256, "head_dim",
                             head_dim, "must be 64, 96, 128 or 256 on the GPU");
    attnkit::detail::require(block_size >= 1, "moba block_size", block_size, "must be >= 1");
    attnkit::detail::require(capacity_tokens >= 1, "capacity_tokens", capacity_tokens, "must be >= 1");
    cap_blocks_ = (capacity_tokens + block_size - 1) / block_size;
    tokens_.assign(static_cast<size_t>(batch), 0);
    detail::check(cudaMalloc(&means_, sizeof(float) * batch * kv_heads * cap_blocks_ * head_dim),
                  "cudaMalloc (MoBA block means)");
    detail::check(cudaMalloc(&lens_, sizeof(int32_t) * batch), "cudaMalloc (MoBA block means)");
    detail::check(cudaMemset(means_, 0, sizeof(float) * batch * kv_heads * cap_blocks_ * head_dim), "cudaMemset");
  }
  ~MobaDeviceMeans() {
    cudaFree(means_);
    cudaFree(lens_);
  }
  MobaDeviceMeans(const MobaDeviceMeans&) = delete;
  MobaDeviceMeans& operator=(const MobaDeviceMeans&) = delete;

  // k: the device cache [B, capacity, Hkv, D]; kv_lens: the new valid length
  // of every sequence (host array, each >= its previous length).
  template <class T>
  void update(const Tensor4<const T>& k, const int32_t* kv_lens, cudaStream_t stream = nullptr) {
    using attnkit::detail::concat;
    using attnkit::detail::require;
    require(k.shape[0] == batch_, "k.shape[0]", k.shape[0], concat("must equal the means' batch (", batch_, ")"));
    require(k.shape[2] == heads_, "k.shape[2]", k.shape[2], concat("must equal the means' kv heads (", heads_, ")"));
    require(k.shape[3] == dim_, "k.shape[3]", k.shape[3], concat("must equal the means' head dim (", dim_, ")"));
    require(k.stride[3] == 1, "k.stride[3]", k.stride[3], "must be 1");
    require(kv_lens != nullptr, "kv_lens", 0, "must be a host array of the new lengths");
    int64_t first = cap_blocks_, last = 0;
    for (int64_t b = 0; b < batch_; ++b) {
      const int64_t n = kv_lens[b], old = tokens_[static_cast<size_t>(b)];
      require(n >= old, concat("kv_lens[", b, "]").c_str(), n, concat("must not shrink (was ", old, ")"));
      require(n <= k.shape[1] && n <= cap_blocks_ * bs_, concat("kv_lens[", b, "]").c_str(), n,
              concat("must be <= the cache capacity (", std::min(k.shape[1], cap_blocks_ * bs_), ")"));
      if (n > old) first = std::min(first, old / bs_), last = std::max(last, (n + bs_ - 1) / bs_);
    }
    detail::check(cudaMemcpyAsync(lens_, kv_lens, sizeof(int32_t) * batch_, cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync (kv_lens)");
    for (int64_t b = 0; b < batch_; ++b) tokens_[static_cast<size_t>(b)] = kv_lens[b];
    if (last <= first) return;
    if constexpr (!std::is_same_v<T, float>) {
      MobaArgs<T> a;
      a.p.k = k.data;
      a.p.k_layout = {k.stride[0], k.stride[1], k.stride[2]};
      a.p.shape.batch = batch_;
      a.p.shape.kv_heads = heads_;
      a.p.shape.head_dim = dim_;
      a.p.shape.kv_capacity = k.shape[1];
      a.p.shape.kv_lens = lens_;
      a.block_size = bs_;
      a.means = means_;
      a.means_stride = cap_blocks_;
      detail::launch_block_means(a, first, last, stream);
    } else {
      attnkit::detail::fail("float32 keys are not supported on the GPU");
    }
  }

  int64_t tokens(int64_t b) const { return tokens_[static_cast<size_t>(b)]; }
  int64_t block_size() const { return bs_; }
  int64_t block_capacity() const { return cap_blocks_; }
  float* data() const { return means_; }

  // The call's kv lengths (device-resident: one small copy) must be the ones
  // the means cover.
  void check_tokens(const ProblemShape& s, cudaStream_t stream) const {
    using attnkit::detail::concat;
    attnkit::detail::require(
        s.batch == batch_ && s.kv_heads == heads_ && s.head_dim == dim_, "moba means shape", batch_,
        concat("must match the call (batch ", s.batch, ", kv heads ", s.kv_heads, ", head dim ", s.head_dim, ")"));
    std::vector<int32_t> lens(static_cast<size_t>(batch_), static_cast<int32_t>(s.kv_capacity));
    if (s.kv_lens) {
      detail::check(cudaMemcpyAsync(lens.data(), s.kv_lens, sizeof(int32_t) * batch_, cudaMemcpyDeviceToHost, stream),
                    "cudaMemcpyAsync (kv_lens)");
      detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    }
    for (int64_t b = 0; b < batch_; ++b)
      if (lens[static_cast<size_t>(b)] != tokens_[static_cast<size_t>(b)])
        attnkit::detail::fail_arg(
            concat("moba means tokens of sequence ", b).c_str(), tokens_[static_cast<size_t>(b)],
            concat("must equal its kv length (", lens[static_cast<size_t>(b)], "); update() the means first"));
  }

 private:
  int64_t batch_, heads_, dim_, bs_, cap_blocks_ = 0;
  std::vector<int64_t> tokens_;
  float* means_ = nullptr;
  int32_t* lens_ = nullptr;
};

namespace detail {

// Optional per-phase timing of one call (benchmarks): CUDA events on the
// call's stream, read after it finishes. Milliseconds.
struct PhaseTimes {
  float gate = 0, lists = 0, gathered = 0, own = 0, merge = 0;
};

class PhaseClock {
 public:
  PhaseClock(PhaseTimes* t, cudaStream_t s) : t_(t), s_(s) {
    if (t_) mark();
  }
  ~PhaseClock() {
    for (cudaEvent_t e : ev_) (void)cudaEventDestroy(e);
  }
  PhaseClock(const PhaseClock&) = delete;
  PhaseClock& operator=(const PhaseClock&) = delete;
  // Time since the previous mark goes to *slot.
  void lap(float* slot) {
    if (!t_) return;
    mark();
    laps_.push_back(slot);
  }
  void finish() {
    if (!t_ || ev_.empty()) return;
    check(cudaEventSynchronize(ev_.back()), "cudaEventSynchronize");
    for (size_t i = 0; i < laps_.size(); ++i)
      check(cudaEventElapsedTime(laps_[i], ev_[i], ev_[i + 1]), "cudaEventElapsedTime");
  }

 private:
  void mark() {
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    check(cudaEventRecord(e, s_), "cudaEventRecord");
    ev_.push_back(e);
  }
  PhaseTimes* t_;
  cudaStream_t s_;
  std::vector<cudaEvent_t> ev_;
  std::vector<float*> laps_;
};

// One MoBA call on validated device params, head dim D fixed.
template <class T, int D>
class Run {
 public:
  // `cached` (optional): block means kept across calls (MobaDeviceMeans).
  Run(const AttentionParams<T>& p, const MobaConfig& cfg, const AttentionOptions& o,
      const MobaDeviceMeans* cached = nullptr)
      : stream_(static_cast<cudaStream_t>(o.cuda_stream)), cached_means_(cached) {
    const ProblemShape& s = p.shape;
    a_.p = p;
    if (o.rope) {
      // As the dense GPU path: DynamicNTK's length from the capacities.
      const int64_t seq_len =
          s.alignment == Alignment::BottomRight ? s.kv_capacity : std::max(s.q_capacity, s.kv_capacity);
      const rope::RopeParams rp = rope::resolve(*o.rope, D, seq_len);
      a_.p = attnkit::cuda::rope_prepass(p, rp, stream_, attnkit::cuda::detail::workspace_pool(), &rope_ws_);
    }
    // The lse layout the merge writes (also when the caller passes none).
    a_.p.lse_batch_stride = s.varlen() ? 0 : s.q_heads * s.q_capacity;
    a_.p.lse_head_stride = s.varlen() ? s.total_q : s.q_capacity;
    a_.block_size = cfg.block_size;
    a_.top_k = cfg.top_k;
    a_.blocks = std::max<int64_t>(1, (s.kv_capacity + cfg.block_size - 1) / cfg.block_size);
    a_.slots = moba::detail::selection_slots(s, cfg);
    if (cached) {
      a_.means = cached->data();
      a_.means_stride = cached->block_capacity();
    }
    rows_ = s.varlen() ? s.total_q : s.batch * s.q_capacity;
    lanes_ = rows_ * s.q_heads;
    n_lists_ = s.batch * s.kv_heads * a_.blocks;
  }
  ~Run() {
    if (rope_ws_) (void)cudaFreeAsync(rope_ws_, stream_);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // Block means and the selection (plus per-list counts).
  void gate(PhaseTimes* times = nullptr) {
    PhaseClock clock(times, stream_);
    const ProblemShape& s = a_.p.shape;
    if (!cached_means_) means_ = StreamBuf<float>(static_cast<size_t>(n_lists_ * D), stream_);
    blocks_ = StreamBuf<int32_t>(static_cast<size_t>(lanes_ * a_.slots), stream_);
    count_ = StreamBuf<int32_t>(static_cast<size_t>(lanes_), stream_);
    score_ = StreamBuf<float>(static_cast<size_t>(lanes_ * a_.slots), stream_);
    list_count_ = StreamBuf<int32_t>(static_cast<size_t>(n_lists_), stream_);
    if (!cached_means_) {
      a_.means = means_.get();
      a_.means_stride = a_.blocks;
    }
    a_.sel_blocks = blocks_.get();
    a_.sel_count = count_.get();
    a_.sel_score = score_.get();
    a_.list_count = list_count_.get();
    check(cudaMemsetAsync(a_.sel_blocks, 0xff, sizeof(int32_t) * lanes_ * a_.slots, stream_), "cudaMemsetAsync");
    check(cudaMemsetAsync(a_.sel_count, 0, sizeof(int32_t) * lanes_, stream_), "cudaMemsetAsync");
    check(cudaMemsetAsync(a_.list_count, 0, sizeof(int32_t) * n_lists_, stream_), "cudaMemsetAsync");

    if (!cached_means_) launch_block_means(a_, 0, a_.blocks, stream_);

    const size_t smem = static_cast<size_t>(D) * (kGateChunk * sizeof(float) + kGateLanes * sizeof(T));
    auto gate_kernel = gate_select_kernel<T, D>;
    allow_dynamic_smem(gate_kernel, smem);
    gate_kernel<<<lane_grid(), kGateLanes, smem, stream_>>>(a_);
    check_launch("moba gate_select_kernel");
    if (times) clock.lap(&times->gate);
    clock.finish();
  }

  // Everything after the gate: lists, gathered and own-block flash calls, merge.
  void attend(PhaseTimes* times = nullptr) {
    PhaseClock clock(times, stream_);
    const ProblemShape& s = a_.p.shape;
    std::vector<int32_t> counts(static_cast<size_t>(n_lists_));
    check(cudaMemcpyAsync(counts.data(), a_.list_count, sizeof(int32_t) * n_lists_, cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync (MoBA list sizes)");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    std::vector<unsigned long long> start(static_cast<size_t>(n_lists_));
    int64_t entries = 0;
    for (int64_t l = 0; l < n_lists_; ++l) {
      start[static_cast<size_t>(l)] = static_cast<unsigned long long>(entries);
      entries += counts[static_cast<size_t>(l)];
    }

    StreamBuf<float> own_lse(static_cast<size_t>(rows_ * s.q_heads), stream_);
    StreamBuf<float> acc, acc_lse;
    if (entries > 0) {
      StreamBuf<unsigned long long> cursor(static_cast<size_t>(n_lists_), stream_);
      StreamBuf<int64_t> entry_lane(static_cast<size_t>(entries), stream_);
      StreamBuf<int64_t> part_of(static_cast<size_t>(lanes_ * a_.slots), stream_);
      check(cudaMemcpyAsync(cursor.get(), start.data(), sizeof(unsigned long long) * n_lists_, cudaMemcpyHostToDevice,
                            stream_),
            "cudaMemcpyAsync (MoBA list starts)");
      a_.list_cursor = cursor.get();
      a_.entry_lane = entry_lane.get();
      a_.part_of = part_of.get();
      fill_lists_kernel<T><<<lane_grid(), kGateLanes, 0, stream_>>>(a_);
      check_launch("moba fill_lists_kernel");
      acc = StreamBuf<float>(static_cast<size_t>(lanes_ * D), stream_);
      acc_lse = StreamBuf<float>(static_cast<size_t>(lanes_), stream_);
      run_lists(counts, start, acc.get(), acc_lse.get(), clock, times);
    }

    // The own block, on the caller's layout; its (out, lse) is the last part.
    AttentionParams<T> own = a_.p;
    own.sink_logits = nullptr;
    own.lse = own_lse.get();
    attnkit::cuda::forward_hdim<D>(own, OwnBlockMask(a_.block_size), stream_);
    if (times) clock.lap(&times->own);

    const dim3 fgrid(grid_dim(s.q_capacity * s.q_heads, kFoldWarps), static_cast<unsigned>(s.batch));
    finish_kernel<T, D><<<fgrid, 32 * kFoldWarps, 0, stream_>>>(a_, own_lse.get(), acc.get(), acc_lse.get());
    check_launch("moba finish_kernel");
    if (times) clock.lap(&times->merge);
    clock.finish();
  }

  // The selection on the host, for inspection and the reference.
  MobaSelection download() const {
    const ProblemShape& s = a_.p.shape;
    MobaSelection sel;
    sel.rows = rows_;
    sel.q_heads = s.q_heads;
    sel.slots = a_.slots;
    sel.block_size = a_.block_size;
    sel.blocks.resize(static_cast<size_t>(lanes_ * a_.slots));
    sel.count.resize(static_cast<size_t>(lanes_));
    if (s.varlen()) {
      sel.cu_q.resize(static_cast<size_t>(s.batch + 1));
      check(cudaMemcpyAsync(sel.cu_q.data(), s.cu_q, sizeof(int32_t) * (s.batch + 1), cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync (cu_seqlens_q)");
    } else {
      sel.q_capacity = s.q_capacity;
    }
    check(cudaMemcpyAsync(sel.blocks.data(), a_.sel_blocks, sizeof(int32_t) * sel.blocks.size(), cudaMemcpyDeviceToHost,
                          stream_),
          "cudaMemcpyAsync (MoBA selection)");
    check(cudaMemcpyAsync(sel.count.data(), a_.sel_count, sizeof(int32_t) * sel.count.size(), cudaMemcpyDeviceToHost,
                          stream_),
          "cudaMemcpyAsync (MoBA selection)");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return sel;
  }

 private:
  dim3 lane_grid() const {
    const ProblemShape& s = a_.p.shape;
    return dim3(grid_dim(s.q_capacity * s.group(), kGateLanes), static_cast<unsigned>(s.kv_heads),
                static_cast<unsigned>(s.batch));
  }

  // Chunks of consecutive lists, each one varlen flash call over a head-major
  // copy of k and v, folded into the running per-lane parts.
  void run_lists(const std::vector<int32_t>& counts, const std::vector<unsigned long long>& start, float* acc,
                 float* acc_lse, PhaseClock& clock, PhaseTimes* times) {
    const ProblemShape& s = a_.p.shape;
    const int64_t Bs = a_.block_size, per_head = a_.blocks * Bs;
    StreamBuf<T> kc(static_cast<size_t>(s.batch * s.kv_heads * per_head * D), stream_);
    StreamBuf<T> vc(static_cast<size_t>(s.batch * s.kv_heads * per_head * D), stream_);
    const dim3 hgrid(grid_dim(per_head, 8), static_cast<unsigned>(s.kv_heads), static_cast<unsigned>(s.batch));
    head_major_kernel<T><<<hgrid, dim3(D / 8, 8), 0, stream_>>>(a_.p, a_.p.k, a_.p.k_layout, kc.get(), per_head);
    check_launch("moba head_major_kernel (k)");
    head_major_kernel<T><<<hgrid, dim3(D / 8, 8), 0, stream_>>>(a_.p, a_.p.v, a_.p.v_layout, vc.get(), per_head);
    check_launch("moba head_major_kernel (v)");

    // Lists per call: the grid's z limit, and cu_seqlens_k = l * Bs in int32.
    const int64_t max_lists =
        std::min<int64_t>(65535, std::max<int64_t>(1, (std::numeric_limits<int32_t>::max() - Bs) / Bs));
    const int64_t budget = chunk_entries(D * static_cast<int64_t>(sizeof(T)));
    struct Chunk {
      int64_t l0, l1, e0, e1, longest;
    };
    std::vector<Chunk> chunks;
    int64_t widest = 0;
    for (int64_t l = 0; l < n_lists_;) {
      Chunk c{l, l, static_cast<int64_t>(start[static_cast<size_t>(l)]), 0, 0};
      int64_t e = 0;
      while (l < n_lists_ && l - c.l0 < max_lists && (e == 0 || e + counts[static_cast<size_t>(l)] <= budget)) {
        e += counts[static_cast<size_t>(l)];
        c.longest = std::max<int64_t>(c.longest, counts[static_cast<size_t>(l)]);
        ++l;
      }
      c.l1 = l;
      c.e1 = c.e0 + e;
      if (e > 0) {
        chunks.push_back(c);
        widest = std::max(widest, e);
      }
    }
    std::vector<int32_t> cu_k(static_cast<size_t>(max_lists + 1));
    for (size_t l = 0; l < cu_k.size(); ++l) cu_k[l] = static_cast<int32_t>(static_cast<int64_t>(l) * Bs);
    StreamBuf<int32_t> cu_k_dev(cu_k.size(), stream_), cu_q_dev(static_cast<size_t>(max_lists + 1), stream_);
    check(cudaMemcpyAsync(cu_k_dev.get(), cu_k.data(), sizeof(int32_t) * cu_k.size(), cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync (MoBA cu_seqlens_k)");
    if (times) clock.lap(&times->lists);
    StreamBuf<T> q_rows(static_cast<size_t>(widest * D), stream_), o_rows(static_cast<size_t>(widest * D), stream_);
    StreamBuf<float> lse_rows(static_cast<size_t>(widest), stream_);
    std::vector<int32_t> cu_q;
    for (const Chunk& c : chunks) {
      const int64_t n = c.e1 - c.e0, nl = c.l1 - c.l0;
      cu_q.assign(static_cast<size_t>(nl + 1), 0);
      for (int64_t l = 0; l < nl; ++l)
        cu_q[static_cast<size_t>(l + 1)] = cu_q[static_cast<size_t>(l)] + counts[static_cast<size_t>(c.l0 + l)];
      // Pageable source: the copy has staged it before returning, so cu_q may change next round.
      check(cudaMemcpyAsync(cu_q_dev.get(), cu_q.data(), sizeof(int32_t) * (nl + 1), cudaMemcpyHostToDevice, stream_),
            "cudaMemcpyAsync (MoBA cu_seqlens_q)");
      gather_rows_kernel<T><<<grid_dim(n, 8), dim3(D / 8, 8), 0, stream_>>>(a_, c.e0, n, q_rows.get());
      check_launch("moba gather_rows_kernel");

      AttentionParams<T> g;
      ProblemShape& gs = g.shape;
      gs.batch = nl;
      gs.q_heads = gs.kv_heads = 1;
      gs.head_dim = gs.v_head_dim = D;
      gs.q_capacity = c.longest;
      gs.kv_capacity = Bs;
      gs.total_q = n;
      gs.cu_q = cu_q_dev.get();
      gs.cu_k = cu_k_dev.get();
      gs.alignment = Alignment::TopLeft;
      g.q = q_rows.get();
      g.k = kc.get() + c.l0 * Bs * D;
      g.v = vc.get() + c.l0 * Bs * D;
      g.out = o_rows.get();
      g.q_layout = g.k_layout = g.v_layout = g.o_layout = SeqLayout{0, D, D};
      g.lse = lse_rows.get();
      g.lse_head_stride = n;
      g.scale = a_.p.scale;
      g.softcap = a_.p.softcap;
      ListKeysMask keys;
      keys.shape = s;
      keys.first_list = c.l0;
      keys.blocks = a_.blocks;
      keys.block_size = Bs;
      attnkit::cuda::forward_hdim<D>(g, keys, stream_);

      const dim3 fgrid(grid_dim(s.q_capacity * s.q_heads, kFoldWarps), static_cast<unsigned>(s.batch));
      fold_parts_kernel<T, D>
          <<<fgrid, 32 * kFoldWarps, 0, stream_>>>(a_, c.e0, c.e1, o_rows.get(), lse_rows.get(), acc, acc_lse);
      check_launch("moba fold_parts_kernel");
    }
    if (times) clock.lap(&times->gathered);
  }

  MobaArgs<T> a_;
  cudaStream_t stream_ = nullptr;
  void* rope_ws_ = nullptr;
  const MobaDeviceMeans* cached_means_ = nullptr;
  int64_t rows_ = 0, lanes_ = 0, n_lists_ = 0;
  StreamBuf<float> means_, score_;
  StreamBuf<int32_t> blocks_, count_, list_count_;
};

// Checks that apply to MoBA on the GPU beyond the dense path's.
template <class T>
void check_problem(const AttentionParams<T>& p, const AttentionOptions& o) {
  attnkit::cuda::check_gpu_problem(p, o);
  if (p.alibi_slopes)
    attnkit::detail::fail(
        "alibi_slopes cannot be combined with MoBA on the GPU (gathered query rows lose the positions the bias "
        "needs); run the layer on the host or without ALiBi");
}

template <class F>
void with_head_dim(int64_t D, F&& f) {
  switch (D) {
    case 64:
      f(std::integral_constant<int, 64>{});
      break;
    case 96:
      f(std::integral_constant<int, 96>{});
      break;
    case 128:
      f(std::integral_constant<int, 128>{});
      break;
    default:
      f(std::integral_constant<int, 256>{});
      break;
  }
}

}  // namespace detail

// MoBA attention on device params (validated by the front door), with block
// means computed here or kept by the caller (`cached`).
template <class T>
void forward(const AttentionParams<T>& p, const MobaConfig& cfg, const AttentionOptions& o,
             const MobaDeviceMeans* cached = nullptr) {
  detail::check_problem(p, o);
  if (cached)
    attnkit::detail::require(cached->block_size() == cfg.block_size, "moba means block_size", cached->block_size(),
                             attnkit::detail::concat("must equal the config's block_size (", cfg.block_size, ")"));
  if constexpr (!std::is_same_v<T, float>) {
    const ProblemShape& s = p.shape;
    if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
    if (cached) cached->check_tokens(s, static_cast<cudaStream_t>(o.cuda_stream));
    detail::with_head_dim(s.head_dim, [&](auto d) {
      detail::Run<T, decltype(d)::value> run(p, cfg, o, cached);
      run.gate();
      run.attend();
    });
  }
}

// The selection MoBA makes on the GPU, copied to the host.
template <class T>
MobaSelection select(const AttentionParams<T>& p, const MobaConfig& cfg, const AttentionOptions& o) {
  detail::check_problem(p, o);
  MobaSelection sel;
  if constexpr (!std::is_same_v<T, float>) {
    const ProblemShape& s = p.shape;
    if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return sel;
    detail::with_head_dim(s.head_dim, [&](auto d) {
      detail::Run<T, decltype(d)::value> run(p, cfg, o);
      run.gate();
      sel = run.download();
    });
  }
  return sel;
}

}  // namespace attnkit::moba::cuda
