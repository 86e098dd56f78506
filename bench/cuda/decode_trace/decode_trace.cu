// Per-phase timeline of flash_decode_kernel: where a decode call's fixed cost
// goes (bench/cuda/NOTES-decode.md, Session 7). Needs the DTRACE points of
// hooks.patch, applied to a scratch copy of include/ (never to the tree), and
// is not part of the CMake build:
//   cp -r include /tmp/t/ && (cd /tmp/t && patch -p1 < .../hooks.patch)
//   nvcc -std=c++17 -O3 --generate-code=arch=compute_90a,code=[sm_90a]
//        --expt-relaxed-constexpr -I /tmp/t/include -o decode_trace decode_trace.cu
//   ./decode_trace B kv flush   (Hq 32 / Hkv 8, D 128, bf16, causal, Sq 1;
//                                flush 0: none, L2 warm; 1: clean; 2: clean,
//                                then a kernel with the decode kernel's smem)
// Each point: cycles since the CTA's entry (clock64 of lane 0 of each warp,
// the kernel's first statement), min / median / max over CTAs x warps, the
// median of each over 20 calls.
// The globaltimer lines time the gap from a one-thread marker kernel to the
// first CTA and from the last CTA to the next marker; with the GPU idle the
// first one is mostly the host's launch time.
#define ATTNKIT_DECODE_TRACE
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "attnkit/attnkit.hpp"
#include "attnkit/cuda/cuda.hpp"
using namespace attnkit;
using T = bfloat16;
static void ok(cudaError_t e, const char* w) {
  if (e) {
    std::printf("%s: %s\n", w, cudaGetErrorString(e));
    std::exit(1);
  }
}
__global__ void rd(const uint4* a, size_t n, unsigned* sink) {
  unsigned x = 0;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x ^= a[i].x;
  if (x == 0x12345) *sink = x;
}
// Asks for the decode kernel's shared memory, so the SMs' L1 / shared split
// is already the decode kernel's when it launches (flush mode 2).
__global__ void smem_user(int n) {
  extern __shared__ unsigned char smem[];
  if (threadIdx.x == 1024) smem[n - 1] = 0;
}
__global__ void mark(unsigned long long* p) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  *p = t;
}
static double med(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
int main(int argc, char** argv) {
  const int64_t B = argc > 1 ? atoll(argv[1]) : 1, kv = argc > 2 ? atoll(argv[2]) : 4096;
  const int flush = argc > 3 ? atoi(argv[3]) : 0;  // 0 none, 1 clean, 2 clean + an smem_user launch
  const int64_t Hq = 32, Hkv = 8, D = 128;
  T *q, *k, *v, *o;
  ok(cudaMalloc(&q, B * Hq * D * 2), "m");
  ok(cudaMalloc(&k, B * kv * Hkv * D * 2), "m");
  ok(cudaMalloc(&v, B * kv * Hkv * D * 2), "m");
  ok(cudaMalloc(&o, B * Hq * D * 2), "m");
  {
    std::vector<uint16_t> h(size_t(B * kv * Hkv * D));
    std::mt19937 r(1);
    for (auto& x : h) x = 0x3c00 ^ (r() & 0x80ff);
    ok(cudaMemcpy(k, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "c");
    ok(cudaMemcpy(v, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "c");
    ok(cudaMemcpy(q, h.data(), B * Hq * D * 2, cudaMemcpyHostToDevice), "c");
  }
  void* fb;
  unsigned* sink;
  unsigned long long* marks;
  const size_t fbytes = size_t(256) << 20;
  ok(cudaMalloc(&fb, fbytes), "m");
  ok(cudaMalloc(&sink, 4), "m");
  ok(cudaMalloc(&marks, 64), "m");
  AttentionOptions opts;
  const auto p = make_params<T>(Tensor4<const T>(q, {B, 1, Hq, D}), Tensor4<const T>(k, {B, kv, Hkv, D}),
                                Tensor4<const T>(v, {B, kv, Hkv, D}), Tensor4<T>(o, {B, 1, Hq, D}), opts, false);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  unsigned long long* sym;
  ok(cudaGetSymbolAddress((void**)&sym, cuda::g_dtrace), "sym");
  std::vector<unsigned long long> tr(8192 * 16);
  const int reps = 20;
  std::vector<double> ev, gap_pre, gap_post, empty_gap, clk, ncta;
  std::vector<std::vector<double>> lo(16), mid(16), hi(16);
  std::vector<double> last_merge, last_ticket_rel;
  for (int r = 0; r < reps + 3; ++r) {
    // empty-kernel baseline for the dispatch gap between two marks
    mark<<<1, 1>>>(marks + 4);
    mark<<<1, 1>>>(marks + 5);
    ok(cudaMemsetAsync(sym, 0, 8192 * 16 * 8), "z");
    if (flush) {
      ok(cudaMemsetAsync(fb, 0, fbytes), "f");
      rd<<<1024, 256>>>((const uint4*)fb, fbytes / 16, sink);
    }
    if (flush == 2) {
      const int smem = 202080;  // DecodeConfig<bf16, 128>::kSmemBytes
      ok(cudaFuncSetAttribute(smem_user, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "attr");
      smem_user<<<132, 32, smem>>>(smem);
    }
    mark<<<1, 1>>>(marks + 0);
    cudaEventRecord(e0);
    cuda::forward_hdim<128>(p, CausalMask{}, nullptr);
    cudaEventRecord(e1);
    mark<<<1, 1>>>(marks + 1);
    ok(cudaEventSynchronize(e1), "s");
    ok(cudaDeviceSynchronize(), "s");
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (r < 3) continue;
    ev.push_back(ms * 1000);
    unsigned long long mk[8];
    ok(cudaMemcpy(mk, marks, 64, cudaMemcpyDeviceToHost), "c");
    ok(cudaMemcpy(tr.data(), sym, tr.size() * 8, cudaMemcpyDeviceToHost), "c");
    unsigned long long g_entry = ~0ull, g_end = 0;
    std::vector<double> d[16];
    double cyc = 0, ns = 0;
    int n = 0;
    for (int c = 0; c < 2048; ++c) {
      const auto* w0 = &tr[size_t(c * 4) * 16];
      if (!w0[0]) continue;
      ++n;
      g_entry = std::min(g_entry, w0[15]);
      const auto* w1 = &tr[size_t(c * 4 + 1) * 16];
      const auto* w2 = &tr[size_t(c * 4 + 2) * 16];
      g_end = std::max(g_end, std::max(w1[15], w2[15]));
      if (w1[15] && w1[12]) cyc += double(w1[12] - w0[0]), ns += double(w1[15] - w0[15]);
      for (int w = 0; w < 4; ++w) {
        const auto* s = &tr[size_t(c * 4 + w) * 16];
        for (int kk = 1; kk < 15; ++kk)
          if (s[kk]) d[kk].push_back(double(s[kk] - w0[0]));
      }
      if (w0[14]) {
        last_merge.push_back(double(w0[14] - w0[12]));
        last_ticket_rel.push_back(double(w0[12] - w0[0]));
      }
    }
    ncta.push_back(n);
    clk.push_back(cyc / ns * 1000);
    gap_pre.push_back(double(g_entry - mk[0]));
    gap_post.push_back(double(mk[1] - g_end));
    empty_gap.push_back(double(mk[5] - mk[4]));
    for (int kk = 1; kk < 15; ++kk) {
      if (d[kk].empty()) continue;
      std::sort(d[kk].begin(), d[kk].end());
      lo[kk].push_back(d[kk].front());
      mid[kk].push_back(d[kk][d[kk].size() / 2]);
      hi[kk].push_back(d[kk].back());
    }
  }
  std::printf("B%lld kv%lld flush=%d: kernel (events) %.1f us, CTAs %.0f, SM clock %.0f MHz\n", (long long)B,
              (long long)kv, flush, med(ev), med(ncta), med(clk));
  std::printf(
      "  globaltimer: mark->first CTA entry %.0f ns (mark->mark, nothing between: %.0f ns); last CTA end->mark %.0f "
      "ns\n",
      med(gap_pre), med(empty_gap), med(gap_post));
  const char* names[15] = {"entry",           "setup (split_tiles)", "Q + first tiles issued",
                           "Q landed + sync", "tile0 ready",         "tile0 done",
                           "Q issued",        "tile0 issued",        "loop exit",
                           "warps synced",    "partials written",    "-",
                           "ticket known",    "last: merge start",   "last: merged"};
  std::printf("  %-24s %9s %9s %9s   (cycles from the CTA's entry; min / median / max over CTAs x warps)\n", "point",
              "min", "median", "max");
  for (int kk = 1; kk < 15; ++kk)
    if (!mid[kk].empty()) std::printf("  %-24s %9.0f %9.0f %9.0f\n", names[kk], med(lo[kk]), med(mid[kk]), med(hi[kk]));
  std::printf("  last CTAs: ticket at %.0f, merge %.0f cycles (medians)\n", med(last_ticket_rel), med(last_merge));
  return 0;
}
