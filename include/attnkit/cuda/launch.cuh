// Host side of one forward call: pick the kernel configuration (prefill or
// split-KV decode), size the grid, allocate split workspace on the stream,
// launch, check. Head dim and mask are already compile-time here.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "attnkit/core/error.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/cuda/check.cuh"
#include "attnkit/cuda/forward_kernel.cuh"
#include "attnkit/cuda/merge_kernel.cuh"

namespace attnkit::cuda {

// Kernel configurations per head dim. Prefill: 4 warps x 32 rows (two
// m-tiles per warp, FlashAttention-2's shape: every K/V fragment feeds two
// mma's), 64-key tiles, no GQA packing; D = 256 keeps 16 rows per warp and
// 32-key tiles (O alone is 128 registers a thread). Decode: one warp per
// CTA, 16 packed rows (a GQA group's heads x up to 16 queries), many CTAs
// over key splits so the whole chip streams K/V.
template <class T, int D>
struct Configs {
  using Prefill = FwdConfig<T, D, 4, (D > 128 ? 1 : 2), (D > 128 ? 32 : 64), false>;
  using Decode = FwdConfig<T, D, 1, 1, 32>;
};

// Queries per sequence up to which the decode path (GQA packing + split-KV) runs.
inline constexpr int64_t kDecodeMaxQueries = 16;

namespace detail {

struct DeviceInfo {
  int sms = 132;
};
inline DeviceInfo device_info() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  static thread_local int cached_dev = -1;
  static thread_local DeviceInfo info;
  if (cached_dev != dev) {
    check(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    cached_dev = dev;
  }
  return info;
}

// Split-KV workspace comes from a stream-ordered pool of our own that keeps
// its memory (release threshold = max): the default pool would hand pages
// back at every synchronisation and re-map them on the next decode call,
// which costs more than the decode itself.
inline cudaMemPool_t workspace_pool() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  static std::mutex mu;
  static std::map<int, cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto it = pools.find(dev);
  if (it != pools.end()) return it->second;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = dev;
  cudaMemPool_t pool = nullptr;
  check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate");
  uint64_t keep = ~uint64_t(0);
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  pools.emplace(dev, pool);
  return pool;
}

}  // namespace detail

// Returns the memory the library's workspace pool keeps between calls (split-KV
// partials, RoPE copies, MoBA workspaces) to the device, once the work queued
// on `stream` that uses it has finished. The next call allocates it again.
inline void trim_workspace(cudaStream_t stream = nullptr) {
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  detail::check(cudaMemPoolTrimTo(detail::workspace_pool(), 0), "cudaMemPoolTrimTo");
}

namespace detail {

// Raise the dynamic shared-memory limit of a kernel above 48 KiB, once per
// kernel and device. Keyed by the kernel's address, not by a per-template
// flag: without -rdc each translation unit registers its own copy of a
// template kernel, and the attribute is per copy.
template <class Kernel>
void allow_smem(Kernel k, int bytes) {
  if (bytes <= 48 * 1024) return;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, bool> done;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(k), dev);
  if (done.count(key)) return;
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "cudaFuncSetAttribute");
  done[key] = true;
}

template <class Cfg, class Mask>
void launch_fwd(FwdArgs<typename Cfg::Elem>& a, const Mask& mask, cudaStream_t stream) {
  using T = typename Cfg::Elem;
  const ProblemShape& s = a.p.shape;
  const int64_t rows = s.q_capacity * a.group_pack;
  a.m_blocks = static_cast<int>((rows + Cfg::kBlockM - 1) / Cfg::kBlockM);
  const int64_t head_groups = s.q_heads / a.group_pack;
  if (a.num_splits > 1) {
    a.ws_rows = s.varlen() ? s.total_q : s.batch * s.q_capacity;
    const size_t n = static_cast<size_t>(a.num_splits) * a.ws_rows * s.q_heads;
    void* ws = nullptr;
    check(cudaMallocFromPoolAsync(&ws, n * (Cfg::D + 1) * sizeof(float), workspace_pool(), stream),
          "cudaMallocFromPoolAsync (split-KV workspace)");
    a.ws_out = static_cast<float*>(ws);
    a.ws_lse = a.ws_out + n * Cfg::D;
  }
  auto kernel = flash_fwd_kernel<Cfg, Mask>;
  allow_smem(kernel, Cfg::kSmemBytes);
  const dim3 grid(static_cast<unsigned>(a.m_blocks * a.num_splits), static_cast<unsigned>(head_groups),
                  static_cast<unsigned>(s.batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, mask);
  check_launch("flash_fwd_kernel");
  if (a.num_splits > 1) {
    const dim3 mgrid(static_cast<unsigned>(s.q_capacity * s.q_heads), static_cast<unsigned>(s.batch));
    merge_splits_kernel<T, Cfg::D><<<mgrid, 32 * kMergeWarps, 0, stream>>>(a);
    check_launch("merge_splits_kernel");
    check(cudaFreeAsync(a.ws_out, stream), "cudaFreeAsync (split-KV workspace)");
  }
}

// Resident CTAs per SM of a kernel (registers, shared memory), once per
// kernel and device.
template <class Kernel>
int ctas_per_sm(Kernel k, int threads, int smem) {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
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
// kMinTilesPerSplit key tiles each: a split's fixed cost (Q load, fp32
// partial write, its share of the merge) must stay small next to the K/V
// bytes it streams. Measured on the H100 (B = 1, kv = 4096): one tile per
// split spent more time on partials than on K/V; a 1.5-wave grid left B = 1,
// kv = 32768 at 52% of copy bandwidth.
inline int plan_splits(int64_t work_units, int64_t kv_capacity, int block_n, int64_t slots, int64_t* tiles_per_split) {
  constexpr int64_t kMinTilesPerSplit = 4;
  const int64_t n_tiles = std::max<int64_t>(1, (kv_capacity + block_n - 1) / block_n);
  int64_t splits = std::max<int64_t>(1, slots / std::max<int64_t>(1, work_units));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, n_tiles / kMinTilesPerSplit));
  splits = std::min<int64_t>(splits, 4096);
  const int64_t tps = (n_tiles + splits - 1) / splits;
  *tiles_per_split = tps;
  return static_cast<int>((n_tiles + tps - 1) / tps);
}

}  // namespace detail

// One forward call with configuration Cfg. Decode (GQA packing + split-KV)
// when `decode`, else one CTA per row block of one head. `rope` is read only
// by configurations with fused RoPE (Cfg::kRope, dispatch.cuh).
template <class Cfg, class T, class Mask>
void forward_with(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream, bool decode,
                  const FusedRope& rope = FusedRope{}) {
  constexpr float kLog2e = 1.4426950408889634f;
  const ProblemShape& s = p.shape;
  if (s.batch == 0 || s.q_capacity == 0 || s.q_heads == 0) return;
  // The kernel's row / key / tile indices are 32-bit.
  attnkit::detail::require(s.q_capacity * s.group() < (int64_t(1) << 31), "q_capacity", s.q_capacity,
                           "times the GQA group must be < 2^31 on the GPU");
  attnkit::detail::require(s.kv_capacity < (int64_t(1) << 31), "kv_capacity", s.kv_capacity,
                           "must be < 2^31 on the GPU");
  FwdArgs<T> a;
  a.p = p;
  a.scale_log2 = p.scale * kLog2e;
  a.rope = rope;
  if (decode) {
    a.group_pack = Cfg::kPack ? static_cast<int>(s.group()) : 1;
    const int64_t m_blocks = (s.q_capacity * a.group_pack + Cfg::kBlockM - 1) / Cfg::kBlockM;
    const int64_t units = s.batch * (s.q_heads / a.group_pack) * m_blocks;
    detail::allow_smem(flash_fwd_kernel<Cfg, Mask>, Cfg::kSmemBytes);
    const int64_t slots = static_cast<int64_t>(detail::device_info().sms) *
                          detail::ctas_per_sm(flash_fwd_kernel<Cfg, Mask>, Cfg::kThreads, Cfg::kSmemBytes);
    a.num_splits = detail::plan_splits(units, s.kv_capacity, Cfg::kBlockN, slots, &a.tiles_per_split);
  }
  detail::launch_fwd<Cfg>(a, mask, stream);
}

// Runs one forward call with head dim D (== Dv) fixed at compile time.
template <int D, class T, class Mask>
void forward_hdim(const AttentionParams<T>& p, const Mask& mask, cudaStream_t stream) {
  if (p.shape.q_capacity <= kDecodeMaxQueries)
    forward_with<typename Configs<T, D>::Decode>(p, mask, stream, true);
  else
    forward_with<typename Configs<T, D>::Prefill>(p, mask, stream, false);
}

}  // namespace attnkit::cuda
