// Helpers the CUDA benchmarks share: abort on a CUDA error, a device buffer
// of uniform random values in [-1, 1) from a fixed seed, the L2 flush before
// a timed call, and the median CUDA-event time of a call, or its median
// host-clock time.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace attnkit_bench {

inline void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <class T>
T* dev_random(size_t n, uint64_t seed) {
  std::vector<T> h(n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto& x : h) x = T(d(rng));
  T* p = nullptr;
  ok(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  ok(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Two buffers of n 16-byte words read once, 4 independent loads in flight
// per thread: the clean flush, and the floor a decode call's K + V bytes
// cost under the same flush (read_floor).
__global__ void read_kernel(const uint4* a, const uint4* b, size_t n, unsigned* sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (const uint4* p : {a, b})
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += 4 * stride) {
      uint4 x[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) x[u] = i + u * stride < n ? p[i + u * stride] : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < 4; ++u) acc.x ^= x[u].x, acc.y ^= x[u].y, acc.z ^= x[u].z, acc.w ^= x[u].w;
    }
  if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x12345678u) *sink = 1;  // keeps the loads
}

// Before every timed rep: a 256 MiB memset (the methodology of every table
// here and of torch_compare.py: it leaves L2 full of dirty lines that the
// timed kernel's misses must write back), or with `mode` Clean a read of
// that buffer after it (L2 then holds clean lines: nothing to write back),
// or None (no flush: L2 warm, as in back-to-back decode calls).
struct Flusher {
  enum Mode { Dirty, Clean, None } mode = Dirty;
  void* buf = nullptr;
  unsigned* sink = nullptr;
  size_t bytes = size_t(256) << 20;
  Flusher() {
    ok(cudaMalloc(&buf, bytes), "cudaMalloc flush");
    ok(cudaMalloc(&sink, sizeof(unsigned)), "cudaMalloc flush");
  }
  void operator()() {
    if (mode == None) return;
    ok(cudaMemsetAsync(buf, 0, bytes), "flush");
    if (mode == Clean) {
      const uint4* words = static_cast<const uint4*>(buf);
      read_kernel<<<1024, 256>>>(words, words + bytes / 32, bytes / 32, sink);
    }
  }
};

// Median over `reps` of the time between CUDA events around `call` on the
// default stream; `before()` runs ahead of each timed call, outside the
// events (an L2 flush, say), after `warmup` untimed calls.
template <class Call, class Before>
double median_event_ms(Call&& call, Before&& before, int reps, int warmup = 3) {
  cudaEvent_t a, b;
  ok(cudaEventCreate(&a), "event");
  ok(cudaEventCreate(&b), "event");
  for (int w = 0; w < warmup; ++w) call();
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    before();
    ok(cudaEventRecord(a), "record");
    call();
    ok(cudaEventRecord(b), "record");
    ok(cudaEventSynchronize(b), "sync");
    float ms = 0;
    ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median host-clock time of `call` over `n` calls, microseconds.
template <class Call>
double median_host_us(Call&& call, int n) {
  std::vector<double> t;
  for (int r = 0; r < n; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace attnkit_bench
