// Llama-3-style GQA attention on the GPU through the same front door as the
// CPU: a prompt (prefill, causal) and then token-by-token decode against the
// KV cache, each checked against attnkit::attention on host copies.
//
// Llama-3-8B attention shape: 32 query heads, 8 KV heads, head dim 128, bf16,
// RoPE with Llama-3.1 frequency scaling (base 500000). The GPU kernels do not
// fuse RoPE yet, so q and k are rotated with attnkit::apply_rope first (the
// same rotation for both paths).
#include <cuda_runtime.h>

#include <algorithm>
#include <attnkit/attention.hpp>
#include <attnkit/rope/rope.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace attnkit;
using T = bfloat16;

namespace {

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <class V>
T* upload(const V& h) {
  T* d = nullptr;
  ok(cudaMalloc(&d, h.size() * sizeof(T)), "cudaMalloc");
  ok(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double m = 0;
  for (size_t n = 0; n < a.size(); ++n) m = std::max(m, std::abs(double(to_float(a[n])) - double(to_float(b[n]))));
  return m;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("llama3_decode: no usable CUDA device, nothing to run\n");
    return 0;
  }
  const int64_t Hq = 32, Hkv = 8, D = 128, prompt = 777, steps = 8, cap = prompt + steps;
  RopeConfig rope = RopeConfig::standard(RopeStyle::Half, 500000.0);
  rope.scaling = RopeScaling::Llama3;
  rope.factor = 8.0;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = 4.0;
  rope.original_max_position = 8192;

  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto rnd = [&](int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (auto& x : v) x = T(dist(rng));
    return v;
  };
  // The whole sequence's q, k, v (prompt + decoded tokens), rotated in place.
  std::vector<T> q = rnd(cap * Hq * D), k = rnd(cap * Hkv * D), v = rnd(cap * Hkv * D);
  apply_rope(Tensor4<T>(q.data(), {1, cap, Hq, D}), rope);
  apply_rope(Tensor4<T>(k.data(), {1, cap, Hkv, D}), rope);

  T* dq = upload(q);
  T* dk = upload(k);
  T* dv = upload(v);
  T* dout = nullptr;
  ok(cudaMalloc(&dout, size_t(cap * Hq * D) * sizeof(T)), "cudaMalloc");
  cudaEvent_t e0, e1;
  ok(cudaEventCreate(&e0), "event");
  ok(cudaEventCreate(&e1), "event");

  // ---- prefill: the prompt attends causally to itself ----
  {
    const Tensor4<const T> qd(dq, {1, prompt, Hq, D}), kd(dk, {1, prompt, Hkv, D}), vd(dv, {1, prompt, Hkv, D});
    const Tensor4<T> od(dout, {1, prompt, Hq, D});
    attention(qd, kd, vd, od, CausalMask{});  // warm-up
    ok(cudaEventRecord(e0), "record");
    attention(qd, kd, vd, od, CausalMask{});
    ok(cudaEventRecord(e1), "record");
    ok(cudaEventSynchronize(e1), "sync");
    float gpu_ms = 0;
    ok(cudaEventElapsedTime(&gpu_ms, e0, e1), "elapsed");
    std::vector<T> gpu(size_t(prompt * Hq * D)), cpu(gpu.size());
    ok(cudaMemcpy(gpu.data(), dout, gpu.size() * sizeof(T), cudaMemcpyDeviceToHost), "download");
    const auto t0 = std::chrono::steady_clock::now();
    attention(Tensor4<const T>(q.data(), {1, prompt, Hq, D}), Tensor4<const T>(k.data(), {1, prompt, Hkv, D}),
              Tensor4<const T>(v.data(), {1, prompt, Hkv, D}), Tensor4<T>(cpu.data(), {1, prompt, Hq, D}),
              CausalMask{});
    const double cpu_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("prefill %lld tokens: GPU %.3f ms, CPU %.3f ms, max |GPU - CPU| = %.3g\n", (long long)prompt, gpu_ms,
                cpu_ms, max_abs_diff(gpu, cpu));
  }

  // ---- decode: token t (position t) attends to the cache of t + 1 keys ----
  {  // warm-up: the first decode call loads the decode kernels (lazy module loading)
    attention(Tensor4<const T>(dq, {1, 1, Hq, D}), Tensor4<const T>(dk, {1, prompt, Hkv, D}),
              Tensor4<const T>(dv, {1, prompt, Hkv, D}), Tensor4<T>(dout, {1, 1, Hq, D}), CausalMask{});
    ok(cudaDeviceSynchronize(), "sync");
  }
  double worst = 0, gpu_us = 0;
  for (int64_t t = prompt; t < cap; ++t) {
    const int64_t len = t + 1;
    const Tensor4<const T> qd(dq + t * Hq * D, {1, 1, Hq, D}), kd(dk, {1, len, Hkv, D}), vd(dv, {1, len, Hkv, D});
    const Tensor4<T> od(dout, {1, 1, Hq, D});
    ok(cudaDeviceSynchronize(), "sync");
    const auto t0 = std::chrono::steady_clock::now();
    attention(qd, kd, vd, od, CausalMask{});
    ok(cudaDeviceSynchronize(), "sync");
    gpu_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    std::vector<T> gpu(size_t(Hq * D)), cpu(gpu.size());
    ok(cudaMemcpy(gpu.data(), dout, gpu.size() * sizeof(T), cudaMemcpyDeviceToHost), "download");
    attention(Tensor4<const T>(q.data() + t * Hq * D, {1, 1, Hq, D}), Tensor4<const T>(k.data(), {1, len, Hkv, D}),
              Tensor4<const T>(v.data(), {1, len, Hkv, D}), Tensor4<T>(cpu.data(), {1, 1, Hq, D}), CausalMask{});
    worst = std::max(worst, max_abs_diff(gpu, cpu));
  }
  std::printf(
      "decode %lld steps (cache %lld..%lld): GPU %.1f us per step (host clock, launch + sync), "
      "max |GPU - CPU| = %.3g\n",
      (long long)steps, (long long)prompt + 1, (long long)cap, gpu_us / double(steps), worst);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout);
  return 0;
}
