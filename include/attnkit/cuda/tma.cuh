// Hopper's tensor memory accelerator (TMA) for K/V tiles: the 128-byte
// swizzled shared-memory layout it writes, mbarrier completion, and the
// host-side tensor maps (CUtensorMap) that describe a K or V operand.
//
// Why: a decode CTA that streams K/V with 16-byte cp.async issues 32 copies
// per lane per tile, and on the H100 those copies queue at the SM's load
// path (bench/cuda/NOTES-decode.md, Session 5); one TMA instruction moves a
// whole 64-column block of a tile and completes on an mbarrier.
//
// Layout ("SW128"): a tile of R rows x C 16-bit columns is C / 64 column
// blocks (C rounded up to 64), each R rows of 128 bytes; 16-byte chunk c of
// row r sits at chunk c ^ (r % 8). That is TMA's CU_TENSOR_MAP_SWIZZLE_128B
// (address bits [4:6] ^= [7:9]), so every column block starts 1024-byte
// aligned. Element (r, c) lives at byte sw128_offset(R, r, c). ldmatrix reads
// of 8 consecutive rows hit 8 different chunks: no bank conflicts.
#pragma once

#include <cuda.h>  // CUtensorMap and the cuTensorMapEncodeTiled signature (no libcuda link)
#include <cuda_runtime.h>

#include <cstdint>

#include "attnkit/core/params.hpp"
#include "attnkit/cuda/driver.cuh"

namespace attnkit::cuda::detail {

__host__ __device__ constexpr uint32_t sw128_offset(int rows, int r, int c) {
  return static_cast<uint32_t>((c / 64) * rows * 128 + r * 128 + ((((c % 64) / 8) ^ (r % 8)) * 16) + (c % 8) * 2);
}

// The SW128 layout as a copy_rows_async layout (forward_kernel.cuh): kRows
// rows per 64-column block; rows 8 apart keep their chunk order, 128 bytes on.
template <int kRows>
struct Sw128Tile {
  static constexpr int kRowPeriod = 8;
  static constexpr int kRowBytes = 8 * 128;
  __device__ static uint32_t offset(int r, int col) { return sw128_offset(kRows, r, col); }
};

// The TMA and mbarrier instructions exist from sm_90; before it these
// wrappers compile to nothing (the host never enables the TMA path there:
// KvTensorMaps::use_tma stays 0).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define ATTNKIT_SM90_ASM(...) asm volatile(__VA_ARGS__)
#else
#define ATTNKIT_SM90_ASM(...) ((void)0)
#endif

// Orders this thread's generic-proxy smem accesses (st.shared, cp.async)
// before later async-proxy ones (TMA writes, wgmma reads) of the same bytes.
__device__ __forceinline__ void fence_proxy_async() {
  ATTNKIT_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_init(uint32_t bar, unsigned count) {
  ATTNKIT_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes initialised mbarriers visible to the async proxy (TMA completions).
__device__ __forceinline__ void mbarrier_init_fence() {
  ATTNKIT_SM90_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also expects `bytes` of TMA transactions in this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  ATTNKIT_SM90_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Waits until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  ATTNKIT_SM90_ASM(
      "{\n.reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// 16 zero bytes to smem (a generic-proxy write: fence_proxy_async before a
// later TMA write of the same bytes).
__device__ __forceinline__ void st_shared_zero16(uint32_t addr) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
}
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  ATTNKIT_SM90_ASM("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// One box of a rank-4 map at coordinates (c0..c3), innermost first, into
// smem at `dst`; completes `bar`'s transactions by the box's full size
// (elements outside the tensor are written as zeros).
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, int c3,
                                            uint32_t bar) {
  ATTNKIT_SM90_ASM(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
#undef ATTNKIT_SM90_ASM

// Tensor maps of K and V for a decode launch (a __grid_constant__ kernel
// parameter). Dimensions, innermost first: head dim (box: one 64-column
// block), then heads and rows in increasing stride order (`rows_inner`
// says which comes first; box: one head, kBlockN rows), then batch (varlen:
// one "batch" of total_k rows). Rows past the tensor read as zeros, so a tile
// never reads past the allocation.
struct KvTensorMaps {
  CUtensorMap k;
  CUtensorMap v;
  int use_tma = 0;     // 0: the kernel copies with cp.async
  int rows_inner = 0;  // 1: dims are (d, row, head, batch), else (d, head, row, batch)
};

// cuTensorMapEncodeTiled (driver.cuh); nullptr where the driver does not have it.
inline decltype(&cuTensorMapEncodeTiled) tensor_map_encoder() {
  static const auto fn = driver_function<decltype(&cuTensorMapEncodeTiled)>("cuTensorMapEncodeTiled");
  return fn;
}

// Encodes one operand's map (16-bit elements): `rows` rows per batch entry,
// `heads` heads, head dim `d`; boxes of 64 columns x 1 head x `box_rows`.
// False where the layout is not expressible (strides not multiples of 16
// bytes, address not 16-byte aligned, ...): the caller falls back to cp.async.
inline bool encode_kv_map(CUtensorMap* map, CUtensorMapDataType type, const void* base, const SeqLayout& l, int64_t d,
                          int64_t heads, int64_t rows, int64_t batch, bool rows_inner, int box_rows) {
  const auto encode = tensor_map_encoder();
  // TMA coordinates are 32-bit: a varlen K of 2^31 rows or more stays on cp.async.
  if (!encode || rows <= 0 || rows >= (int64_t(1) << 31) || heads <= 0 || batch <= 0) return false;
  const cuuint64_t row_b = static_cast<cuuint64_t>(l.row_stride) * 2,
                   head_b = static_cast<cuuint64_t>(l.head_stride) * 2;
  // Varlen has one "batch": any valid stride past the rows will do.
  const cuuint64_t batch_b =
      batch > 1 ? static_cast<cuuint64_t>(l.batch_stride) * 2 : static_cast<cuuint64_t>(rows) * row_b;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(d), static_cast<cuuint64_t>(rows_inner ? rows : heads),
                              static_cast<cuuint64_t>(rows_inner ? heads : rows), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {rows_inner ? row_b : head_b, rows_inner ? head_b : row_b, batch_b};
  const cuuint32_t box[4] = {64, rows_inner ? static_cast<cuuint32_t>(box_rows) : 1u,
                             rows_inner ? 1u : static_cast<cuuint32_t>(box_rows), 1u};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return encode(map, type, 4, const_cast<void*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace attnkit::cuda::detail
