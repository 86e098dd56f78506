// Host side of one forward call: pick the kernel configuration (prefill or
// split-KV decode), size the grid, take the stream's cached split-KV
// workspace, launch (decode: the attention kernel with the split merge inside,
// or then merge_splits_kernel: DecodeTuning::in_kernel_merge),
// check. Head dim and mask are already compile-time here. A FwdConfig runs
// flash_fwd_kernel (prefill; fused-RoPE decode), a DecodeConfig runs
// flash_decode_kernel (decode_kernel.cuh: every other decode).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/core/error.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/decode_kernel.cuh"
#include "attnkit/cuda/forward_kernel.cuh"
#include "attnkit/cuda/pdl.cuh"
#include "attnkit/cuda/tma.cuh"

namespace attnkit::cuda {

// Kernel configurations per head dim. Prefill: 4 warps x 32 rows (two
// m-tiles per warp, FlashAttention-2's shape: every K/V fragment feeds two
// mma's), 64-key tiles, no GQA packing; D = 256 keeps 16 rows per warp and
// 32-key tiles (O alone is 128 registers a thread).
// DecodeCta (decode without fused RoPE, flash_decode_kernel): 4 warps share
// 16 packed rows (a GQA group's heads x up to 16 queries) and split the key
// tiles; each warp streams 32-key tiles (16 at D = 256) through a 3-deep
// ring of its own (TMA on sm_90, else cp.async). D = 128: 197 KB of smem,
// one CTA per SM; D = 64: two.
// Decode (fused-RoPE decode, flash_fwd_kernel): one warp per CTA, 16 packed
// rows, many CTAs over key splits.
template <class T, int D>
struct Configs {
  using Prefill = FwdConfig<T, D, 4, (D > 128 ? 1 : 2), (D > 128 ? 32 : 64), false>;
  using Decode = FwdConfig<T, D, 1, 1, 32>;
  using DecodeCta = DecodeConfig<T, D, 4, (D > 128 ? 16 : 32), 3>;
};

// Queries per sequence up to which the decode path (GQA packing + split-KV) runs.
inline constexpr int64_t kDecodeMaxQueries = 16;

namespace detail {

// The current device, once per call (everything per-device below is keyed by it).
inline int current_device() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

// Split-KV workspace cached for one stream: tickets (one per work unit,
// zero between launches) then fp32 partials. Grow-only; every allocation,
// free and reset is ordered on that stream, so a call on the stream never
// sees a buffer an earlier call still uses. `mu` is held from the lookup to
// the launch (two host threads on one stream cannot free each other's buffer).
struct SplitWorkspace {
  std::mutex mu;
  unsigned long long stream_id = 0;
  void* base = nullptr;
  size_t tickets = 0;  // unsigned tickets at base (rounded to 256 bytes)
  size_t floats = 0;   // floats after them
  uint64_t last_use = 0;
};

// What attnkit keeps per device: SM count, the workspace pool, the split-KV
// workspaces of the streams seen (at most kMaxStreams; the least recently
// used is dropped after a device synchronisation when a new stream comes).
struct DeviceState {
  static constexpr size_t kMaxStreams = 16;
  int dev = 0;
  int sms = 132;
  int smem_optin = 48 * 1024;  // largest dynamic shared memory a CTA can opt in to
  int cc_major = 8;            // compute capability (TMA from 9)
  cudaMemPool_t pool = nullptr;
  std::mutex mu;  // guards `split` and `tick`
  std::vector<std::unique_ptr<SplitWorkspace>> split;
  uint64_t tick = 0;
};

inline constexpr int kMaxDevices = 256;

inline DeviceState& device_state(int dev) {
  static std::atomic<DeviceState*> slots[kMaxDevices];
  static std::mutex mu;
  if (dev < 0 || dev >= kMaxDevices)
    throw CudaError(attnkit::detail::concat("attnkit: CUDA device ordinal ", dev, " is past ", kMaxDevices));
  DeviceState* st = slots[dev].load(std::memory_order_acquire);
  if (st) return *st;
  std::lock_guard<std::mutex> lock(mu);
  st = slots[dev].load(std::memory_order_relaxed);
  if (st) return *st;
  auto made = std::make_unique<DeviceState>();
  made->dev = dev;
  check(cudaDeviceGetAttribute(&made->sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&made->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&made->cc_major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  // The workspace pool keeps its memory (release threshold = max): the
  // default pool would hand pages back at every synchronisation and re-map
  // them on the next call, which costs more than a decode call itself.
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = dev;
  check(cudaMemPoolCreate(&made->pool, &props), "cudaMemPoolCreate");
  uint64_t keep = ~uint64_t(0);
  check(cudaMemPoolSetAttribute(made->pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  st = made.release();  // lives as long as the process
  slots[dev].store(st, std::memory_order_release);
  return *st;
}

// Split-KV workspace, RoPE copies and MoBA workspaces come from a
// stream-ordered pool of our own (per device) that keeps its memory.
inline cudaMemPool_t workspace_pool() { return device_state(current_device()).pool; }

// Frees every cached split-KV workspace of `st` (the device must be idle).
inline void release_split_workspaces(DeviceState& st) {
  std::lock_guard<std::mutex> lock(st.mu);
  for (auto& w : st.split) {
    std::lock_guard<std::mutex> wl(w->mu);
    if (w->base) check(cudaFree(w->base), "cudaFree (split-KV workspace)");
  }
  st.split.clear();
}

}  // namespace detail

// Returns the memory the library keeps between calls on the current device
// (cached split-KV workspaces, and the pool behind RoPE copies and MoBA
// workspaces) to the device. Synchronises the device first, since the cached
// workspaces serve every stream; the next call allocates again. Do not call
// it while another thread launches attnkit work or captures a graph.
inline void trim_workspace(cudaStream_t stream = nullptr) {
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  detail::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  detail::DeviceState& st = detail::device_state(detail::current_device());
  detail::release_split_workspaces(st);
  detail::check(cudaMemPoolTrimTo(st.pool, 0), "cudaMemPoolTrimTo");
}

namespace detail {

// Split-KV workspace of one launch: pointers, and the lock on the stream's
// cached workspace (not owned: per-call memory, freed after the launch).
struct SplitLease {
  std::unique_lock<std::mutex> lock;
  unsigned* tickets = nullptr;
  float* floats = nullptr;
  void* per_call = nullptr;  // set when the memory is this call's own
};

// `tickets` zero tickets and `floats` floats for a launch on `stream`.
// Streams are told apart by cudaStreamGetId (unique for the context's life,
// so a new stream that reuses a destroyed one's handle gets its own
// workspace). A stream being captured into a CUDA graph gets per-call memory
// (graph-owned allocation, tickets zeroed by a memset node): a cached buffer
// referenced by a graph could be freed by a later, larger call.
inline SplitLease split_workspace(DeviceState& st, cudaStream_t stream, size_t tickets, size_t floats) {
  tickets = (tickets + 63) / 64 * 64;  // 256-byte aligned partials
  SplitLease lease;
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &cap), "cudaStreamIsCapturing");
  if (cap != cudaStreamCaptureStatusNone) {
    void* mem = nullptr;
    check(cudaMallocFromPoolAsync(&mem, tickets * sizeof(unsigned) + floats * sizeof(float), st.pool, stream),
          "cudaMallocFromPoolAsync (split-KV workspace)");
    if (tickets)
      check(cudaMemsetAsync(mem, 0, tickets * sizeof(unsigned), stream), "cudaMemsetAsync (split-KV tickets)");
    lease.per_call = mem;
    lease.tickets = static_cast<unsigned*>(mem);
    lease.floats = reinterpret_cast<float*>(lease.tickets + tickets);
    return lease;
  }
  unsigned long long id = 0;
  check(cudaStreamGetId(stream, &id), "cudaStreamGetId");
  SplitWorkspace* ws = nullptr;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    for (auto& w : st.split)
      if (w->stream_id == id) ws = w.get();
    if (!ws) {
      if (st.split.size() >= DeviceState::kMaxStreams) {
        // Drop the least recently used stream's workspace. Its stream may
        // be gone (its id is never reused) or still running: wait for the
        // whole device, then free it.
        auto lru = std::min_element(st.split.begin(), st.split.end(),
                                    [](const auto& x, const auto& y) { return x->last_use < y->last_use; });
        std::lock_guard<std::mutex> wl((*lru)->mu);
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (split-KV workspace eviction)");
        if ((*lru)->base) check(cudaFree((*lru)->base), "cudaFree (split-KV workspace)");
        (*lru)->base = nullptr;
        (*lru)->stream_id = id;
        (*lru)->tickets = (*lru)->floats = 0;
        ws = lru->get();
      } else {
        st.split.push_back(std::make_unique<SplitWorkspace>());
        ws = st.split.back().get();
        ws->stream_id = id;
      }
    }
    ws->last_use = ++st.tick;
    lease.lock = std::unique_lock<std::mutex>(ws->mu);
  }
  if (ws->tickets < tickets || ws->floats < floats) {
    // Grow (never shrink), in stream order: the old buffer is freed after
    // the launches that use it; the new tickets are zeroed before the next.
    const size_t nt = std::max(ws->tickets, tickets), nf = std::max(ws->floats, floats + floats / 4);
    if (ws->base) check(cudaFreeAsync(ws->base, stream), "cudaFreeAsync (split-KV workspace)");
    ws->base = nullptr;
    ws->tickets = ws->floats = 0;
    void* mem = nullptr;
    check(cudaMallocFromPoolAsync(&mem, nt * sizeof(unsigned) + nf * sizeof(float), st.pool, stream),
          "cudaMallocFromPoolAsync (split-KV workspace)");
    if (nt) check(cudaMemsetAsync(mem, 0, nt * sizeof(unsigned), stream), "cudaMemsetAsync (split-KV tickets)");
    ws->base = mem, ws->tickets = nt, ws->floats = nf;
  }
  lease.tickets = static_cast<unsigned*>(ws->base);
  lease.floats = reinterpret_cast<float*>(lease.tickets + ws->tickets);
  return lease;
}

// Raise the dynamic shared-memory limit of a kernel above 48 KiB, once per
// kernel and device. Keyed by the kernel's address, not by a per-template
// flag: without -rdc each translation unit registers its own copy of a
// template kernel, and the attribute is per copy.
template <class Kernel>
void allow_smem(Kernel k, int bytes, int dev) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, bool> done;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(k), dev);
  if (done.count(key)) return;
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "cudaFuncSetAttribute");
  done[key] = true;
}

// The kernel a configuration runs (same parameters either way).
template <class Cfg, class Mask>
constexpr auto kernel_for() {
  if constexpr (IsDecodeConfig<Cfg>::value)
    return flash_decode_kernel<Cfg, Mask>;
  else
    return flash_fwd_kernel<Cfg, Mask>;
}

// K and V tensor maps for flash_decode_kernel's TMA copies (tma.cuh): on
// sm_90+, where both operands are expressible (16-byte aligned, strides in
// multiples of 16 bytes, the same row / head stride order) and varlen knows
// its total key rows; else use_tma = 0 and the kernel copies with cp.async.
template <class T>
KvTensorMaps kv_tensor_maps(const AttentionParams<T>& p, const DeviceState& st, int box_rows, int d, bool allow) {
  KvTensorMaps m{};
  const ProblemShape& s = p.shape;
  const int64_t rows = s.varlen() ? s.total_k : s.kv_capacity, batch = s.varlen() ? 1 : s.batch;
  const bool rows_inner = p.k_layout.row_stride < p.k_layout.head_stride;
  if (!allow || st.cc_major < 9 || rows_inner != (p.v_layout.row_stride < p.v_layout.head_stride)) return m;
  // The last maps this thread encoded, reused when every input of the
  // encoding matches: a decode loop over one KV cache of fixed capacity asks
  // for the same maps at every step, and cuTensorMapEncodeTiled costs ~0.3 us
  // of host time per call (bench/cuda/NOTES-decode.md, Session 6).
  struct Inputs {
    const void *k, *v;
    SeqLayout kl, vl;
    int64_t heads, rows, batch;
    int box_rows, d, elem;
    bool operator==(const Inputs& o) const {
      auto same = [](const SeqLayout& x, const SeqLayout& y) {
        return x.batch_stride == y.batch_stride && x.row_stride == y.row_stride && x.head_stride == y.head_stride;
      };
      return k == o.k && v == o.v && same(kl, o.kl) && same(vl, o.vl) && heads == o.heads && rows == o.rows &&
             batch == o.batch && box_rows == o.box_rows && d == o.d && elem == o.elem;
    }
  };
  const Inputs in{p.k,  p.v,   p.k_layout, p.v_layout, s.kv_heads,
                  rows, batch, box_rows,   d,          std::is_same<T, half>::value ? 1 : 2};
  thread_local Inputs last_in{};
  thread_local KvTensorMaps last{};
  if (last.use_tma && last_in == in) return last;
  const CUtensorMapDataType type =
      std::is_same<T, half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  m.rows_inner = rows_inner ? 1 : 0;
  m.use_tma = encode_kv_map(&m.k, type, p.k, p.k_layout, d, s.kv_heads, rows, batch, rows_inner, box_rows) &&
              encode_kv_map(&m.v, type, p.v, p.v_layout, d, s.kv_heads, rows, batch, rows_inner, box_rows);
  if (m.use_tma) last_in = in, last = m;
  return m;
}

// One launch of the configuration's kernel, then merge_splits_kernel when
// `a.num_splits` > 1 and the merge is not in the kernel. Splits take a
// workspace from `st`. `allow_tma`: flash_decode_kernel may copy by TMA.
template <class Cfg, class Mask>
void launch_fwd(FwdArgs<typename Cfg::Elem>& a, const Mask& mask, cudaStream_t stream, DeviceState& st,
                bool in_kernel_merge = false, bool allow_tma = true, bool allow_pdl = true) {
  const ProblemShape& s = a.p.shape;
  const int64_t rows = s.q_capacity * a.group_pack;
  a.m_blocks = static_cast<int>((rows + Cfg::kBlockM - 1) / Cfg::kBlockM);
  a.group_div = FastDivmod(a.group_pack);
  a.mblock_div = FastDivmod(a.m_blocks);
  const int64_t head_groups = s.q_heads / a.group_pack;
  SplitLease lease;
  if (a.num_splits > 1) {
    a.ws_rows = s.varlen() ? s.total_q : s.batch * s.q_capacity;
    const size_t n = static_cast<size_t>(a.num_splits) * a.ws_rows * s.q_heads;
    const int64_t units = s.batch * head_groups * a.m_blocks;
    const int C = std::min(std::max(a.split_chunk, 1), a.num_splits);
    const int64_t chunks = (a.num_splits + C - 1) / C;
    const int64_t tickets = in_kernel_merge ? units * (chunks > 1 ? chunks + 1 : 1) : 0;
    attnkit::detail::require(tickets < (int64_t(1) << 31), "split-KV tickets", tickets, "must be < 2^31");
    lease = split_workspace(st, stream, static_cast<size_t>(tickets), n * (Cfg::D + 1));
    a.ws_count = in_kernel_merge ? lease.tickets : nullptr;
    a.ws_out = lease.floats;
    a.ws_lse = a.ws_out + n * Cfg::D;
  }
  auto kernel = kernel_for<Cfg, Mask>();
  allow_smem(kernel, Cfg::kSmemBytes, st.dev);
  const dim3 grid(static_cast<unsigned>(a.m_blocks * a.num_splits), static_cast<unsigned>(head_groups),
                  static_cast<unsigned>(s.batch));
  if constexpr (IsDecodeConfig<Cfg>::value) {
    const PdlLaunch launch(grid, dim3(Cfg::kThreads), Cfg::kSmemBytes, stream, allow_pdl && st.cc_major >= 9);
    check(cudaLaunchKernelEx(&launch.config, kernel, a, mask, kv_tensor_maps(a.p, st, Cfg::kBlockN, Cfg::D, allow_tma)),
          "flash_decode_kernel");
  } else
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, mask);
  check_launch(IsDecodeConfig<Cfg>::value ? "flash_decode_kernel" : "flash_fwd_kernel");
  if (a.num_splits > 1 && !in_kernel_merge) {
    const dim3 mgrid(static_cast<unsigned>(s.q_capacity * s.q_heads), static_cast<unsigned>(s.batch));
    merge_splits_kernel<typename Cfg::Elem, Cfg::D><<<mgrid, 32 * kMergeWarps, 0, stream>>>(a);
    check_launch("merge_splits_kernel");
  }
  if (lease.per_call) check(cudaFreeAsync(lease.per_call, stream), "cudaFreeAsync (split-KV workspace)");
}

// Resident CTAs per SM of a kernel (registers, shared memory), once per
// kernel and device.
template <class Kernel>
int ctas_per_sm(Kernel k, int threads, int smem, int dev) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(k), dev);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  n = std::max(n, 1);
  cache.emplace(key, n);
  return n;
}

// Splits for a decode grid of `work_units` (batch x head group x row block)
// CTA rows: as many as fit in ONE wave of resident CTAs (`slots`), so no
// second, partly empty wave streams the tail alone, but at least
// `min_tiles` key tiles each: a split's fixed cost (Q load, fp32 partial
// write, its share of the merge) must stay small next to the K/V bytes it
// streams. Measured on the H100 (B = 1, kv = 4096): one tile per split spent
// more time on partials than on K/V; a 1.5-wave grid left B = 1, kv = 32768
// at 52% of copy bandwidth.
inline int plan_splits(int64_t work_units, int64_t kv_capacity, int block_n, int64_t slots, int64_t* tiles_per_split,
                       int64_t min_tiles = 4) {
  const int64_t n_tiles = std::max<int64_t>(1, (kv_capacity + block_n - 1) / block_n);
  int64_t splits = std::max<int64_t>(1, slots / std::max<int64_t>(1, work_units));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, n_tiles / std::max<int64_t>(1, min_tiles)));
  splits = std::min<int64_t>(splits, 4096);
  const int64_t tps = (n_tiles + splits - 1) / splits;
  *tiles_per_split = tps;
  return static_cast<int>((n_tiles + tps - 1) / tps);
}

// Splits merged per first-level chunk: the merging CTA is one warp, so one
// level over S splits reads S partials per row through it; two levels of
// ~sqrt(S) each keep the merge tail short (chunk merges overlap the splits
// still streaming). S <= 8: one level.
inline int plan_split_chunk(int splits) {
  if (splits <= 8) return splits;
  int c = 1;
  while (c * c < splits) ++c;
  return c;
}

}  // namespace detail

// Knobs of the decode split plan, for benchmarks (0 = the default).
struct DecodeTuning {
  int min_tiles_per_split = 0;  // default 4 (DecodeConfig: kMinTilesPerSplit)
  int ctas_per_sm = 0;          // default: the occupancy API's resident CTAs per SM
  int split_chunk = 0;          // default plan_split_chunk; >= splits: one-level merge (DecodeConfig: always one level)
  // Where the split partials are merged: -1 the configuration's default,
  // 0 merge_splits_kernel after the attention kernel, 1 inside the attention
  // kernel (atomic tickets, the last CTA of a unit merges; one launch per
  // call). Defaults, both measured on the H100 (bench/cuda/NOTES-decode.md):
  // DecodeConfig (flash_decode_kernel) merges inside, faster at every decode
  // shape of Session 5 (its merging CTA has 4 warps, one row each: B1 kv4096
  // 19.3 vs 20.8 us, B1 kv32768 66.4 vs 68.6 us); FwdConfig (the one-warp
  // flash_fwd_kernel decode) uses the merge kernel (its in-kernel merge
  // funnels a unit through one warp: B1 kv4096 26.6 vs 22.8 us).
  int in_kernel_merge = -1;
  // flash_decode_kernel's K/V copies: -1 TMA where the device and layout
  // allow it (the default), 0 cp.async (the pre-Hopper path, for tests).
  int tma = -1;
  // flash_decode_kernel's launch: -1 with programmatic dependent launch where
  // the device has it (sm_90+, the default; pdl.cuh), 0 a plain launch.
  int pdl = -1;
};

// One forward call with configuration Cfg. Decode (GQA packing + split-KV)
// when `decode`, else one CTA per row block of one head. `rope` is read only
// by configurations with fused RoPE (Cfg::kRope, dispatch.cuh).
template <class Cfg, class T, class Mask>
void forward_with(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream, bool decode,
                  const FusedRope& rope = FusedRope{}, const DecodeTuning& tune = DecodeTuning{}) {
  constexpr float kLog2e = 1.4426950408889634f;
  const ProblemShape& s = p.shape;
  if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
  // The kernel's row / key / tile indices are 32-bit.
  attnkit::detail::require(s.q_capacity * s.group() < (int64_t(1) << 31), "q_capacity", s.q_capacity,
                           "times the GQA group must be < 2^31 on the GPU");
  attnkit::detail::require(s.kv_capacity < (int64_t(1) << 31), "kv_capacity", s.kv_capacity,
                           "must be < 2^31 on the GPU");
  detail::DeviceState& st = detail::device_state(detail::current_device());
  FwdArgs<T> a;
  a.p = p;
  a.scale_log2 = p.scale * kLog2e;
  a.rope = rope;
  if (decode) {
    a.group_pack = Cfg::kPack ? static_cast<int>(s.group()) : 1;
    const int64_t m_blocks = (s.q_capacity * a.group_pack + Cfg::kBlockM - 1) / Cfg::kBlockM;
    const int64_t units = s.batch * (s.q_heads / a.group_pack) * m_blocks;
    auto kernel = detail::kernel_for<Cfg, Mask>();
    detail::allow_smem(kernel, Cfg::kSmemBytes, st.dev);  // before the occupancy query
    const int per_sm =
        tune.ctas_per_sm > 0 ? tune.ctas_per_sm : detail::ctas_per_sm(kernel, Cfg::kThreads, Cfg::kSmemBytes, st.dev);
    const int64_t slots = static_cast<int64_t>(st.sms) * per_sm;
    constexpr bool kCta = IsDecodeConfig<Cfg>::value;
    int64_t min_tiles = 4;
    if constexpr (kCta) min_tiles = Cfg::kMinTilesPerSplit;
    a.num_splits = detail::plan_splits(units, s.kv_capacity, Cfg::kBlockN, slots, &a.tiles_per_split,
                                       tune.min_tiles_per_split > 0 ? tune.min_tiles_per_split : min_tiles);
    if constexpr (kCta)
      a.split_chunk = a.num_splits;  // flash_decode_kernel merges in one level
    else
      a.split_chunk = tune.split_chunk > 0 ? tune.split_chunk : detail::plan_split_chunk(a.num_splits);
  }
  const bool in_kernel = tune.in_kernel_merge < 0 ? IsDecodeConfig<Cfg>::value : tune.in_kernel_merge != 0;
  detail::launch_fwd<Cfg>(a, mask, stream, st, decode && in_kernel, tune.tma != 0, tune.pdl != 0);
}

// Runs one forward call with head dim D (== Dv) fixed at compile time.
// Decode runs flash_decode_kernel (Configs::DecodeCta) where the device lets a
// CTA have its shared memory (Hopper: 227 KB; D = 128 takes 197 KB), else the
// one-warp flash_fwd_kernel decode (Configs::Decode, 39 KB at D = 128).
template <int D, class T, class Mask>
void forward_hdim(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  using Cta = typename Configs<T, D>::DecodeCta;
  if (p.shape.q_capacity <= kDecodeMaxQueries &&
      Cta::kSmemBytes > detail::device_state(detail::current_device()).smem_optin)
    forward_with<typename Configs<T, D>::Decode>(p, mask, stream, true);
  else if (p.shape.q_capacity <= kDecodeMaxQueries)
    forward_with<Cta>(p, mask, stream, true);
  else
    forward_with<typename Configs<T, D>::Prefill>(p, mask, stream, false);
}

}  // namespace attnkit::cuda
