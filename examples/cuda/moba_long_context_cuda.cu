// MoBA on a long context on the GPU, against full causal attention.
//
//   moba_long_context_cuda [N] [top_k] [block_size]      (defaults 131072, 3, 512)
//
// bf16, B = 1, Hq 8 / Hkv 2, D 128, everything in device memory, so the front
// door runs the CUDA path: attention(..., CausalMask{}) is a full-attention
// layer, attention(..., MobaConfig{Bs, top_k}) a MoBA layer. Prints the
// selection's sparsity, the time of both, and the largest difference between
// MoBA's output and dense attention run (by the same flash kernel) under
// exactly the mask the selection implies: the two only differ in how the
// work is split, so the difference is bf16 rounding.
#include <cuda_runtime.h>

#include <algorithm>
#include <attnkit/attention.hpp>
#include <attnkit/moba/moba.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace attnkit;
using T = bfloat16;

static void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <class X>
static X* upload(const std::vector<X>& h) {
  X* d = nullptr;
  ok(cudaMalloc(&d, h.size() * sizeof(X)), "cudaMalloc");
  ok(cudaMemcpy(d, h.data(), h.size() * sizeof(X), cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

template <class F>
static float time_ms(F&& f) {
  cudaEvent_t a, b;
  ok(cudaEventCreate(&a), "event");
  ok(cudaEventCreate(&b), "event");
  ok(cudaEventRecord(a), "record");
  f();
  ok(cudaEventRecord(b), "record");
  ok(cudaEventSynchronize(b), "sync");
  float ms = 0;
  ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
  return ms;
}

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 131072;
  const int64_t top_k = argc > 2 ? std::atoll(argv[2]) : 3;
  const int64_t Bs = argc > 3 ? std::atoll(argv[3]) : 512;
  const int64_t Hq = 8, Hkv = 2, D = 128;
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("moba_long_context_cuda: no usable CUDA device\n");
    return 0;
  }
  if (N < 1 || top_k < 1 || Bs < 1) {
    std::fprintf(stderr, "usage: %s [N >= 1] [top_k >= 1] [block_size >= 1]\n", argv[0]);
    return 2;
  }
  std::printf("MoBA long context on the GPU: N = %lld, Hq = %lld, Hkv = %lld, D = %lld, bf16, block %lld, top_k %lld\n",
              (long long)N, (long long)Hq, (long long)Hkv, (long long)D, (long long)Bs, (long long)top_k);

  // Keys drift through a topic per 4 blocks, so the gate has something to find.
  std::mt19937_64 rng(2024);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<T> q(size_t(N * Hq * D)), k(size_t(N * Hkv * D)), v(size_t(N * Hkv * D));
  std::vector<float> topic(static_cast<size_t>(D));
  for (int64_t j = 0; j < N; ++j) {
    if (j % (4 * Bs) == 0)
      for (auto& t : topic) t = nd(rng);
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t d = 0; d < D; ++d) {
        k[size_t((j * Hkv + h) * D + d)] = T(0.5f * topic[size_t(d)] + nd(rng));
        v[size_t((j * Hkv + h) * D + d)] = T(nd(rng));
      }
  }
  for (auto& x : q) x = T(nd(rng));
  T *dq = upload(q), *dk = upload(k), *dv = upload(v), *dmoba = nullptr, *dref = nullptr;
  ok(cudaMalloc(&dmoba, q.size() * sizeof(T)), "cudaMalloc");
  ok(cudaMalloc(&dref, q.size() * sizeof(T)), "cudaMalloc");
  const Tensor4<const T> Q(dq, {1, N, Hq, D}), K(dk, {1, N, Hkv, D}), V(dv, {1, N, Hkv, D});
  const Tensor4<T> O_moba(dmoba, {1, N, Hq, D}), O_ref(dref, {1, N, Hq, D});
  const MobaConfig cfg{Bs, top_k};

  // Warm-up, then one timed call of each.
  attention(Q, K, V, O_ref, CausalMask{});
  attention(Q, K, V, O_moba, cfg);
  ok(cudaDeviceSynchronize(), "warm-up");
  const float full_ms = time_ms([&] { attention(Q, K, V, O_ref, CausalMask{}); });
  const float moba_ms = time_ms([&] { attention(Q, K, V, O_moba, cfg); });

  // The selection, its sparsity, and dense attention under exactly its mask.
  const MobaSelection sel = moba_select(Q, K, cfg);
  double chosen = 0, causal = 0;
  for (int64_t i = 0; i < N; ++i) {
    causal += double(i + 1) * Hq;
    for (int64_t h = 0; h < Hq; ++h) {
      for (int32_t c : sel.chosen(0, h, i))
        chosen += c == i / Bs ? double(i - c * Bs + 1) : double(std::min<int64_t>(Bs, N - int64_t(c) * Bs));
    }
  }
  int32_t* d_blocks = upload(sel.blocks);
  int32_t* d_count = upload(sel.count);
  MobaSelectionMask mask = sel.mask();
  mask.blocks = d_blocks;
  mask.count = d_count;
  // The head-dim-128 kernel directly (the front door would compile every head
  // dim and RoPE form of this mask; this check needs one).
  const AttentionParams<T> pd = make_params<T>(Q, K, V, O_ref, AttentionOptions{}, /*host_lengths=*/false);
  const float dense_ms = time_ms([&] { cuda::forward_hdim<128>(pd, mask, nullptr); });

  std::vector<T> got(q.size()), want(q.size());
  ok(cudaMemcpy(got.data(), dmoba, got.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  ok(cudaMemcpy(want.data(), dref, want.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  double max_diff = 0, max_val = 0;
  for (size_t x = 0; x < got.size(); ++x) {
    max_diff = std::max(max_diff, std::fabs(double(float(got[x])) - double(float(want[x]))));
    max_val = std::max(max_val, std::fabs(double(float(want[x]))));
  }

  std::printf("selection: %.2f%% of the causal (query, key) pairs (%.1fx fewer)\n", 100.0 * chosen / causal,
              causal / chosen);
  std::printf("full causal attention %9.2f ms\n", full_ms);
  std::printf("MoBA                  %9.2f ms  (%.2fx faster; ideal N / (2 top_k Bs) = %.2fx)\n", moba_ms,
              full_ms / moba_ms, double(N) / (2.0 * double(top_k) * double(Bs)));
  std::printf("dense under MoBA's mask (per-element predicate) %.2f ms\n", dense_ms);
  std::printf("max |MoBA - dense under the selected mask| = %.3g (outputs up to %.3g; bf16)\n", max_diff, max_val);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dmoba), cudaFree(dref), cudaFree(d_blocks), cudaFree(d_count);
  return max_diff <= 0.05 * std::max(1.0, max_val) ? 0 : 1;
}
