// Helpers the CUDA benchmarks share: abort on a CUDA error, a device buffer
// of uniform random values in [-1, 1) from a fixed seed, and the median
// CUDA-event time of a call, or its median host-clock time.
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
