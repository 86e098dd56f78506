// Helpers the CUDA benchmarks share: abort on a CUDA error, and a device
// buffer of uniform random values in [-1, 1) from a fixed seed.
#pragma once

#include <cuda_runtime.h>

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

}  // namespace attnkit_bench
