// One-off probe of the wgmma operand encodings the sm90 forward kernel uses
// (include/attnkit/cuda/sm90/wgmma.cuh), each against a host reference:
//  * SS: S(128 x N) = Q(128 x D) K(N x D)^T, two warpgroups, Q and K K-major
//    SW128 tiles, D 64 / 128, N 64 / 128, bf16 and fp16;
//  * RS: O(128 x D) = P(128 x BN) V(BN x D), P from registers, V MN-major
//    SW128 (transpose bit), for two (leading, stride) byte-offset candidates.
// Build: nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -I include
//   bench/cuda/sm90/wgmma_probe.cu -o wgmma_probe
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attnkit/cuda/sm90/wgmma.cuh"

using namespace attnkit;
namespace sm = attnkit::cuda::sm90;

template <class T>
struct Host;
template <>
struct Host<bfloat16> {
  static uint16_t enc(float x) {
    __nv_bfloat16 h = __float2bfloat16(x);
    return *reinterpret_cast<uint16_t*>(&h);
  }
  static float dec(uint16_t u) { return __bfloat162float(*reinterpret_cast<__nv_bfloat16*>(&u)); }
};
template <>
struct Host<attnkit::half> {
  static uint16_t enc(float x) {
    __half h = __float2half(x);
    return *reinterpret_cast<uint16_t*>(&h);
  }
  static float dec(uint16_t u) { return __half2float(*reinterpret_cast<__half*>(&u)); }
};

constexpr int M = 128;

// S = Q K^T. q: M x D row-major, k: N x D row-major, s: M x N.
template <class T, int D, int N>
__global__ void ss_kernel(const uint16_t* q, const uint16_t* k, float* s) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t base = (sm::fence_proxy_async(), static_cast<uint32_t>(__cvta_generic_to_shared(smem)));
  const uint32_t sQ = (base + 1023) & ~1023u, sK = sQ + M * D * 2;
  unsigned char* gQ = smem + (sQ - base);
  unsigned char* gK = smem + (sK - base);
  for (int e = threadIdx.x; e < M * D; e += blockDim.x)
    *reinterpret_cast<uint16_t*>(gQ + sm::sw128_offset(M, e / D, e % D)) = q[e];
  for (int e = threadIdx.x; e < N * D; e += blockDim.x)
    *reinterpret_cast<uint16_t*>(gK + sm::sw128_offset(N, e / D, e % D)) = k[e];
  sm::fence_proxy_async();
  __syncthreads();
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  float d[N / 2];
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  sm::fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint64_t da = sm::make_desc(sQ + (kk / 4) * M * 128 + wg * 64 * 128 + (kk % 4) * 32, 16, 1024);
    const uint64_t db = sm::make_desc(sK + (kk / 4) * N * 128 + (kk % 4) * 32, 16, 1024);
    sm::Mma<T, N>::ss(d, da, db, 1);
  }
  sm::commit();
  sm::wait<0>();
  const int g = lane / 4, t = lane % 4, r = wg * 64 + warp * 16 + g;
  for (int i = 0; i < N / 8; ++i) {
    s[r * N + 8 * i + 2 * t] = d[4 * i];
    s[r * N + 8 * i + 2 * t + 1] = d[4 * i + 1];
    s[(r + 8) * N + 8 * i + 2 * t] = d[4 * i + 2];
    s[(r + 8) * N + 8 * i + 2 * t + 1] = d[4 * i + 3];
  }
#endif
}

// O = P V. p: M x BN, v: BN x D (row-major, rows = keys), o: M x D.
template <class T, int D, int BN>
__global__ void rs_kernel(const uint16_t* p, const uint16_t* v, float* o, uint32_t lbo, uint32_t sbo) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t sV = (base + 1023) & ~1023u;
  unsigned char* gV = smem + (sV - base);
  for (int e = threadIdx.x; e < BN * D; e += blockDim.x)
    *reinterpret_cast<uint16_t*>(gV + sm::sw128_offset(BN, e / D, e % D)) = v[e];
  sm::fence_proxy_async();
  __syncthreads();
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4, r = wg * 64 + warp * 16 + g;
  auto pk = [&](int row, int col) {
    return static_cast<uint32_t>(p[row * BN + col]) | (static_cast<uint32_t>(p[row * BN + col + 1]) << 16);
  };
  uint32_t a[BN / 16][4];
  for (int kk = 0; kk < BN / 16; ++kk) {
    a[kk][0] = pk(r, 16 * kk + 2 * t);
    a[kk][1] = pk(r + 8, 16 * kk + 2 * t);
    a[kk][2] = pk(r, 16 * kk + 2 * t + 8);
    a[kk][3] = pk(r + 8, 16 * kk + 2 * t + 8);
  }
  float d[D / 2];
  for (int i = 0; i < D / 2; ++i) d[i] = 0.f;
  sm::fence();
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    const uint64_t db = sm::make_desc(sV + kk * 16 * 128, lbo, sbo);
    sm::Mma<T, D>::template rs<1>(d, a[kk], db, 1);
  }
  sm::commit();
  sm::wait<0>();
  for (int i = 0; i < D / 8; ++i) {
    o[r * D + 8 * i + 2 * t] = d[4 * i];
    o[r * D + 8 * i + 2 * t + 1] = d[4 * i + 1];
    o[(r + 8) * D + 8 * i + 2 * t] = d[4 * i + 2];
    o[(r + 8) * D + 8 * i + 2 * t + 1] = d[4 * i + 3];
  }
#endif
}

std::mt19937 rng(7);
template <class T>
std::vector<uint16_t> rnd(size_t n, std::vector<float>& f) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint16_t> h(n);
  f.resize(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = Host<T>::enc(u(rng));
    f[i] = Host<T>::dec(h[i]);
  }
  return h;
}
template <class X>
X* up(const std::vector<X>& h) {
  X* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(X));
  cudaMemcpy(d, h.data(), h.size() * sizeof(X), cudaMemcpyHostToDevice);
  return d;
}
int failures = 0;

template <class T, int D, int N>
void test_ss(const char* tname) {
  std::vector<float> qf, kf;
  auto q = rnd<T>(M * D, qf), k = rnd<T>(N * D, kf);
  uint16_t *dq = up(q), *dk = up(k);
  float* ds = nullptr;
  cudaMalloc(&ds, M * N * 4);
  cudaMemset(ds, 0xff, M * N * 4);
  const int smem = (M + N) * D * 2 + 1024;
  cudaFuncSetAttribute(ss_kernel<T, D, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  ss_kernel<T, D, N><<<1, 256, smem>>>(dq, dk, ds);
  cudaError_t e = cudaDeviceSynchronize();
  std::vector<float> s(M * N);
  cudaMemcpy(s.data(), ds, M * N * 4, cudaMemcpyDeviceToHost);
  double err = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double ref = 0;
      for (int c = 0; c < D; ++c) ref += double(qf[i * D + c]) * kf[j * D + c];
      const double x = s[i * N + j];
      err = std::isfinite(x) ? std::max(err, std::fabs(x - ref)) : 1e30;
    }
  const bool ok = e == cudaSuccess && err < 1e-3;
  failures += !ok;
  std::printf("SS %-4s D=%3d N=%3d (Q,K K-major SW128, SBO 1024, k-step +32 B): max err %.3g %s %s\n", tname, D, N, err,
              cudaGetErrorString(e), ok ? "OK" : "WRONG");
  cudaFree(dq), cudaFree(dk), cudaFree(ds);
}

template <class T, int D, int BN>
void test_rs(const char* tname) {
  std::vector<float> pf, vf;
  auto p = rnd<T>(M * BN, pf), v = rnd<T>(BN * D, vf);
  uint16_t *dp = up(p), *dv = up(v);
  float* dout = nullptr;
  cudaMalloc(&dout, M * D * 4);
  const int smem = BN * D * 2 + 1024;
  cudaFuncSetAttribute(rs_kernel<T, D, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const uint32_t cands[3][2] = {{BN * 128u, 1024u}, {1024u, BN * 128u}, {16u, 1024u}};
  for (auto& c : cands) {
    cudaMemset(dout, 0xff, M * D * 4);
    rs_kernel<T, D, BN><<<1, 256, smem>>>(dp, dv, dout, c[0], c[1]);
    cudaError_t e = cudaDeviceSynchronize();
    std::vector<float> o(M * D);
    cudaMemcpy(o.data(), dout, M * D * 4, cudaMemcpyDeviceToHost);
    double err = 0;
    for (int i = 0; i < M; ++i)
      for (int d = 0; d < D; ++d) {
        double ref = 0;
        for (int j = 0; j < BN; ++j) ref += double(pf[i * BN + j]) * vf[j * D + d];
        const double x = o[i * D + d];
        err = std::isfinite(x) ? std::max(err, std::fabs(x - ref)) : 1e30;
      }
    const bool ok = e == cudaSuccess && err < 1e-3;
    std::printf("RS %-4s D=%3d BN=%3d (P regs, V MN-major SW128) LBO=%5u SBO=%5u: max err %.3g %s %s\n", tname, D, BN,
                c[0], c[1], err, cudaGetErrorString(e), ok ? "OK" : "wrong");
  }
  cudaFree(dp), cudaFree(dv), cudaFree(dout);
}

int main() {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device %s cc %d.%d\n", prop.name, prop.major, prop.minor);
  test_ss<bfloat16, 64, 64>("bf16");
  test_ss<bfloat16, 64, 128>("bf16");
  test_ss<bfloat16, 128, 64>("bf16");
  test_ss<bfloat16, 128, 128>("bf16");
  test_ss<attnkit::half, 128, 128>("f16");
  test_ss<attnkit::half, 64, 128>("f16");
  test_rs<bfloat16, 64, 64>("bf16");
  test_rs<bfloat16, 64, 128>("bf16");
  test_rs<bfloat16, 128, 64>("bf16");
  test_rs<bfloat16, 128, 128>("bf16");
  test_rs<attnkit::half, 128, 128>("f16");
  test_rs<attnkit::half, 64, 128>("f16");
  std::printf("SS failures: %d\n", failures);
  return 0;
}
