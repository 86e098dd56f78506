// Can a decode unit's splits share a thread-block cluster? (bench/cuda/NOTES-decode.md,
// Session 10.) For a kernel shaped like flash_decode_kernel (128 threads, 202,080 B of
// dynamic smem, one CTA per SM) it prints cudaOccupancyMaxActiveClusters per cluster
// size, then times a cluster barrier and a DSMEM merge of one 4 x 128 partial per CTA.
// Not part of the CMake build:
//   nvcc -O3 -std=c++17 -arch=sm_90a -o cluster_probe cluster_probe.cu && ./cluster_probe
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <vector>
constexpr int SMEM = 202080;
__device__ __forceinline__ unsigned long long gtime() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned smid() {
  unsigned r;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cl_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cl_n() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cl_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
__device__ __forceinline__ void cl_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ unsigned mapa(unsigned a, unsigned r) {
  unsigned o;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(o) : "r"(a), "r"(r));
  return o;
}
__device__ __forceinline__ float4 ld_dsm4(unsigned a) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(a));
  return v;
}
__device__ __forceinline__ float ld_dsm(unsigned a) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(a));
  return v;
}

struct Rec {
  unsigned long long t0, t1;
  unsigned sm;
  int c0, c1, c2, c3;
};
// Each CTA: partial of 4 rows x 128 floats + m,l in smem; cluster barrier; CTA rank q merges
// items e = q, q + C, ... of 4*32 float4 items; barrier; record cycles.
__global__ void __launch_bounds__(128) merge_probe(Rec* rec, float* out, int spin) {
  extern __shared__ __align__(16) float sm[];
  unsigned long long t0 = gtime();
  long long c0 = clock64();
  // spin to emulate work
  long long until = c0 + spin;
  while (clock64() < until) {
  }
  float* O = sm;
  float* M = sm + 4 * 128;
  float* L = M + 4;
  for (int i = threadIdx.x; i < 4 * 128; i += 128) O[i] = (blockIdx.x + 1) * 0.001f * i;
  if (threadIdx.x < 4) {
    M[threadIdx.x] = (blockIdx.x % 5) * 0.1f;
    L[threadIdx.x] = 1.f + blockIdx.x;
  }
  long long c1 = clock64();
  cl_arrive();
  cl_wait();
  long long c2 = clock64();
  const unsigned C = cl_n(), q = cl_rank();
  const unsigned base = (unsigned)__cvta_generic_to_shared(sm);
  for (unsigned e = q * 1 + threadIdx.x * C; e < 4 * 32; e += 128 * C) {
    const int r = e / 32, c = e % 32;
    float mm[16], ll[16];
    float4 oo[16];
#pragma unroll
    for (int s = 0; s < 16; ++s)
      if (s < (int)C) {
        unsigned rb = mapa(base, s);
        mm[s] = ld_dsm(rb + (4 * 128 + r) * 4);
        ll[s] = ld_dsm(rb + (4 * 128 + 4 + r) * 4);
        oo[s] = ld_dsm4(rb + (r * 128 + 4 * c) * 4);
      }
    float Mx = -1e30f;
#pragma unroll
    for (int s = 0; s < 16; ++s)
      if (s < (int)C) Mx = fmaxf(Mx, mm[s]);
    float Ls = 0;
    float4 y = make_float4(0, 0, 0, 0);
#pragma unroll
    for (int s = 0; s < 16; ++s)
      if (s < (int)C) {
        float f = exp2f(mm[s] - Mx);
        Ls += f * ll[s];
        y.x += f * oo[s].x;
        y.y += f * oo[s].y;
        y.z += f * oo[s].z;
        y.w += f * oo[s].w;
      }
    float inv = 1.f / Ls;
    reinterpret_cast<float4*>(out)[(blockIdx.x / C) * 128 + e] =
        make_float4(y.x * inv, y.y * inv, y.z * inv, y.w * inv);
  }
  long long c3 = clock64();
  cl_arrive();
  cl_wait();
  long long c4 = clock64();
  unsigned long long t1 = gtime();
  if (threadIdx.x == 0) rec[blockIdx.x] = Rec{t0, t1, smid(), int(c1 - c0), int(c2 - c1), int(c3 - c2), int(c4 - c3)};
}

// A launch of `grid` CTAs of 128 threads with SMEM bytes each, in clusters of `c`.
struct ClusterLaunch {
  cudaLaunchAttribute at[1];
  cudaLaunchConfig_t cfg = {};
  ClusterLaunch(int grid, int c) {
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(128);
    cfg.dynamicSmemBytes = SMEM;
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = c;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;  // cfg.attrs points into this object
};

int main() {
  cudaDeviceProp pr;
  cudaGetDeviceProperties(&pr, 0);
  printf("%s SMs %d\n", pr.name, pr.multiProcessorCount);
  cudaFuncSetAttribute(merge_probe, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
  cudaFuncSetAttribute(merge_probe, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  for (int C : {1, 2, 4, 8, 12, 16}) {
    ClusterLaunch L(C * 8, C);
    cudaLaunchConfig_t& cfg = L.cfg;
    int n = -1;
    cudaError_t e = cudaOccupancyMaxActiveClusters(&n, merge_probe, &cfg);
    int nsmall = -1;
    cfg.dynamicSmemBytes = 48 * 1024;
    cudaOccupancyMaxActiveClusters(&nsmall, merge_probe, &cfg);
    printf("cluster %2d: max active clusters %d (%s) -> %d CTAs; with 48KB smem: %d\n", C, n, cudaGetErrorString(e),
           n * C, nsmall);
  }
  Rec* rec;
  float* out;
  cudaMalloc(&rec, 256 * sizeof(Rec));
  cudaMalloc(&out, 64 * 128 * 16);
  for (int C : {8, 16})
    for (int spin : {0, 20000}) {
      const int G = 128;
      ClusterLaunch L(G, C);
      cudaLaunchConfig_t& cfg = L.cfg;
      cudaEvent_t a, b;
      cudaEventCreate(&a);
      cudaEventCreate(&b);
      float best = 1e9;
      for (int it = 0; it < 20; ++it) {
        cudaEventRecord(a);
        cudaError_t e = cudaLaunchKernelEx(&cfg, merge_probe, rec, out, spin);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        if (e != cudaSuccess) {
          printf("launch err %s\n", cudaGetErrorString(e));
          break;
        }
        float ms;
        cudaEventElapsedTime(&ms, a, b);
        best = std::min(best, ms);
      }
      std::vector<Rec> h(G);
      cudaMemcpy(h.data(), rec, G * sizeof(Rec), cudaMemcpyDeviceToHost);
      unsigned long long tmin = ~0ull, tmax0 = 0, tend = 0;
      std::vector<int> c1, c2, c3;
      for (auto& r : h) {
        tmin = std::min(tmin, r.t0);
        tmax0 = std::max(tmax0, r.t0);
        tend = std::max(tend, r.t1);
        c1.push_back(r.c1);
        c2.push_back(r.c2);
        c3.push_back(r.c3);
      }
      auto med = [](std::vector<int> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      auto mx = [](std::vector<int> v) { return *std::max_element(v.begin(), v.end()); };
      printf(
          "C=%d spin=%d: best event %.2f us; CTA start spread %.2f us; span %.2f us; barrier1 med %d max %d; merge med "
          "%d max %d; barrier2 med %d\n",
          C, spin, best * 1000, (tmax0 - tmin) / 1e3, (tend - tmin) / 1e3, med(c1), mx(c1), med(c2), mx(c2), med(c3));
    }
  cudaError_t e = cudaDeviceSynchronize();
  printf("final: %s\n", cudaGetErrorString(e));
}
