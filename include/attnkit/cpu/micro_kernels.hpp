// The two register-blocked micro-kernels of the CPU forward pass.
//
// Layout choice (the heart of the CPU design): query rows live in SIMD lanes.
// A block of M = lanes * MV query rows is stored transposed, Qt[d][row], so
//   S^T[j][rows] = sum_d K[j][d] * Qt[d][rows]       (broadcast K, load Qt)
//   O^T[d][rows] += sum_j V[j][d] * P^T[j][rows]     (broadcast V, load P^T)
// are both outer-product GEMM micro-kernels that read K and V rows straight
// from memory (no transpose of K, no packing of fp32 inputs), and the online
// softmax is purely vertical: a row's running max and sum are lanes of a
// batch, so no horizontal reductions are ever needed.
#pragma once

#include <cstdint>

#include "attnkit/compat/xsimd_compat.hpp"
#include "attnkit/cpu/simd.hpp"

namespace attnkit {
namespace cpu {
namespace detail {

// Query vectors per prefill block: 4 x 16 lanes = 64 rows with AVX-512
// (halves the K/V traffic and tile-copy cost per FLOP against 32 rows; the
// 6 x 4 accumulator tile still fits 32 registers), 2 with 16 registers.
inline constexpr int kPrefillVectors = kVectorRegisters >= 32 ? 4 : 2;

template <class B, int MV>
struct Blocking {
  static constexpr int kLanes = static_cast<int>(B::size);
  static constexpr int kRows = kLanes * MV;  // query rows per block (M)
  // Accumulators KR x MV (and DR x MV) plus MV operands and a broadcast must
  // fit the register file; 12 x 2 on AVX-512 leaves room, 6 x 2 on AVX2.
  static constexpr int kStrip = kVectorRegisters >= 32 ? (MV <= 2 ? 12 : 6) : (MV <= 1 ? 12 : 6);
  static constexpr int kTileKeys = 48;  // keys per tile (tile-skipping granularity); multiple of kStrip
};

// St[r][*] = sum_d Qt[d][*] * K[r][d] for KR consecutive keys.
template <class B, int MV, int KR>
ATTNKIT_FORCEINLINE void qk_strip(const float* __restrict qt, int64_t dim, const float* __restrict kbase,
                                  int64_t kstride, float* __restrict st) {
  constexpr int L = static_cast<int>(B::size);
  constexpr int M = L * MV;
  B acc[KR][MV];
  for (int r = 0; r < KR; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v] = B(0.0f);
  for (int64_t d = 0; d < dim; ++d) {
    B q[MV];
    for (int v = 0; v < MV; ++v) q[v] = B::load_aligned(qt + d * M + v * L);
    for (int r = 0; r < KR; ++r) {
      const B kb(kbase[r * kstride + d]);
      for (int v = 0; v < MV; ++v) acc[r][v] = fmadd(kb, q[v], acc[r][v]);
    }
  }
  for (int r = 0; r < KR; ++r)
    for (int v = 0; v < MV; ++v) acc[r][v].store_aligned(st + r * M + v * L);
}

// Ot[d0 + c][*] = alpha * Ot[d0 + c][*] + sum_j P^T[j][*] * V[j][d0 + c].
template <class B, int MV, int DR>
ATTNKIT_FORCEINLINE void pv_strip(const float* __restrict pt, int64_t n, const float* __restrict vbase, int64_t vstride,
                                  int64_t d0, float* __restrict ot, const B* alpha) {
  constexpr int L = static_cast<int>(B::size);
  constexpr int M = L * MV;
  B acc[DR][MV];
  for (int c = 0; c < DR; ++c)
    for (int v = 0; v < MV; ++v) acc[c][v] = B::load_aligned(ot + (d0 + c) * M + v * L) * alpha[v];
  for (int64_t j = 0; j < n; ++j) {
    B pj[MV];
    for (int v = 0; v < MV; ++v) pj[v] = B::load_aligned(pt + j * M + v * L);
    const float* vr = vbase + j * vstride + d0;
    for (int c = 0; c < DR; ++c) {
      const B vb(vr[c]);
      for (int v = 0; v < MV; ++v) acc[c][v] = fmadd(vb, pj[v], acc[c][v]);
    }
  }
  for (int c = 0; c < DR; ++c)
    for (int v = 0; v < MV; ++v) acc[c][v].store_aligned(ot + (d0 + c) * M + v * L);
}

// Whole tile: n keys (any n), in strips of KR then single keys.
template <class B, int MV>
void qk_tile(const float* qt, int64_t dim, const float* kbase, int64_t kstride, int64_t n, float* st) {
  constexpr int KR = Blocking<B, MV>::kStrip;
  constexpr int M = Blocking<B, MV>::kRows;
  int64_t j = 0;
  for (; j + KR <= n; j += KR) qk_strip<B, MV, KR>(qt, dim, kbase + j * kstride, kstride, st + j * M);
  for (; j + 4 <= n; j += 4) qk_strip<B, MV, 4>(qt, dim, kbase + j * kstride, kstride, st + j * M);
  for (; j < n; ++j) qk_strip<B, MV, 1>(qt, dim, kbase + j * kstride, kstride, st + j * M);
}

template <class B, int MV>
void pv_tile(const float* pt, int64_t n, const float* vbase, int64_t vstride, int64_t dv, float* ot, const B* alpha) {
  constexpr int DR = Blocking<B, MV>::kStrip;
  int64_t d = 0;
  for (; d + DR <= dv; d += DR) pv_strip<B, MV, DR>(pt, n, vbase, vstride, d, ot, alpha);
  for (; d + 4 <= dv; d += 4) pv_strip<B, MV, 4>(pt, n, vbase, vstride, d, ot, alpha);
  for (; d < dv; ++d) pv_strip<B, MV, 1>(pt, n, vbase, vstride, d, ot, alpha);
}

}  // namespace detail
}  // namespace cpu
}  // namespace attnkit
