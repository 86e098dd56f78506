// Two-binary A/B of the default decode path (bench/cuda/NOTES-decode.md, Session 10):
// build it once against HEAD's headers and once against a change, run both alternately in
// one device call, compare the printed rows and the dumped outputs (cmp: the merge must
// not change a bit). B1, Hq 32 / Hkv 8, D 128, bf16, causal, Sq 1; per kv length: one call
// after a clean L2 flush and with a warm L2 (events), the PDL decode loop over >= 200 MB of
// caches (events around whole passes), and e2e as a caller sees it (host clock, median of
// 200). Not part of the CMake build:
//   git archive HEAD include | tar -x -C /tmp/old
//   nvcc -std=c++17 -O3 -arch=sm_90a --expt-relaxed-constexpr -I /tmp/old/include -o ab_old decode_ab.cu
//   nvcc -std=c++17 -O3 -arch=sm_90a --expt-relaxed-constexpr -I ../../../include -o ab_new decode_ab.cu
//   ./ab_old old.bin OLD; ./ab_new new.bin NEW; ./ab_old old.bin OLD; ./ab_new new.bin NEW; cmp old.bin new.bin
// -DATK_CPS=n sets DecodeTuning::ctas_per_sm (the split plan's resident CTAs per SM); the
// kernel variants of Session 11 are in decode_variants.patch.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <attnkit/cuda/cuda.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "../bench_util.cuh"

using namespace attnkit;
using attnkit_bench::dev_random;
using attnkit_bench::Flusher;
using attnkit_bench::ok;
using T = bfloat16;
using Cta = cuda::Configs<T, 128>::DecodeCta;
constexpr int64_t D = 128, Hq = 32, Hkv = 8;

template <class F>
double events_us(F&& f, Flusher& fl, int reps) {
  return attnkit_bench::median_event_ms(f, fl, reps) * 1e3;
}
template <class F>
double host_us(F&& f, int n) {
  for (int w = 0; w < 20; ++w) f();
  return attnkit_bench::median_host_us(f, n);
}
AttentionParams<T> params(const T* q, const T* k, const T* v, T* o, int64_t B, int64_t kv, float* lse = nullptr) {
  AttentionOptions opts;
  opts.lse = lse;
  return make_params<T>(Tensor4<const T>(q, {B, 1, Hq, D}), Tensor4<const T>(k, {B, kv, Hkv, D}),
                        Tensor4<const T>(v, {B, kv, Hkv, D}), Tensor4<T>(o, {B, 1, Hq, D}), opts, false);
}
#ifndef ATK_CPS
#define ATK_CPS 0
#endif
void decode(const AttentionParams<T>& p) {
  cuda::DecodeTuning tu;
  tu.ctas_per_sm = ATK_CPS;
  cuda::forward_with<Cta>(p, CausalMask{}, nullptr, true, cuda::FusedRope{}, tu);
}

int main(int argc, char** argv) {
  const char* dump = argc > 1 ? argv[1] : "decode_ab.bin";
  const char* tag = argc > 2 ? argv[2] : "";
  Flusher fl;
  // Outputs and LSEs (dumped for cmp across binaries) and repeatability within this one.
  for (int64_t kv : {4096, 32768, 1000, 77}) {
    const int64_t B = kv < 4096 ? 3 : 1, n = B * Hq * D;
    T *q = dev_random<T>(n, 1), *k = dev_random<T>(B * kv * Hkv * D, 2), *v = dev_random<T>(B * kv * Hkv * D, 3);
    T *o0, *o1;
    float *l0, *l1;
    ok(cudaMalloc(&o0, n * 2), "m"), ok(cudaMalloc(&o1, n * 2), "m");
    ok(cudaMalloc(&l0, B * Hq * 4), "m"), ok(cudaMalloc(&l1, B * Hq * 4), "m");
    decode(params(q, k, v, o1, B, kv, l1));
    for (int rep = 0; rep < 50; ++rep) decode(params(q, k, v, o0, B, kv, l0));
    ok(cudaDeviceSynchronize(), "sync");
    std::vector<T> h0(n), h1(n);
    std::vector<float> g0(B * Hq), g1(B * Hq);
    ok(cudaMemcpy(h0.data(), o0, n * 2, cudaMemcpyDeviceToHost), "copy");
    ok(cudaMemcpy(h1.data(), o1, n * 2, cudaMemcpyDeviceToHost), "copy");
    ok(cudaMemcpy(g0.data(), l0, g0.size() * 4, cudaMemcpyDeviceToHost), "copy");
    ok(cudaMemcpy(g1.data(), l1, g1.size() * 4, cudaMemcpyDeviceToHost), "copy");
    int differ = 0, bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float a = float(h0[i]), b = float(h1[i]);
      bad += !std::isfinite(a) || !std::isfinite(b);
      differ += a != b;
    }
    for (size_t i = 0; i < g0.size(); ++i) differ += g0[i] != g1[i];
    std::FILE* f = std::fopen(dump, kv == 4096 ? "wb" : "ab");
    std::fwrite(h1.data(), 2, h1.size(), f), std::fwrite(g1.data(), 4, g1.size(), f), std::fclose(f);
    std::printf("%s check B%ld kv%ld: %d values differ between the 1st and 51st call, %d non-finite\n", tag, long(B),
                long(kv), differ, bad);
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o0), cudaFree(o1), cudaFree(l0), cudaFree(l1);
  }
  for (int64_t kv : {4096, 32768}) {
    T* q = dev_random<T>(Hq * D, 1);
    T* o = nullptr;
    ok(cudaMalloc(&o, Hq * D * 2), "m");
    const double cache = double(kv) * Hkv * D * 4;
    const int layers = std::max(4, int(std::ceil(200e6 / cache))), rounds = std::max(1, (32 + layers - 1) / layers);
    std::vector<T*> bufs;
    std::vector<AttentionParams<T>> ps;
    for (int l = 0; l < layers; ++l) {
      bufs.push_back(dev_random<T>(kv * Hkv * D, 5 + 2 * l)), bufs.push_back(dev_random<T>(kv * Hkv * D, 6 + 2 * l));
      ps.push_back(params(q, bufs[2 * l], bufs[2 * l + 1], o, 1, kv));
    }
    fl.mode = Flusher::Clean;
    const double clean = events_us([&] { decode(ps[0]); }, fl, 15);
    fl.mode = Flusher::None;
    const double warm = events_us([&] { decode(ps[0]); }, fl, 15);
    const double loop = events_us(
                            [&] {
                              for (int r = 0; r < rounds; ++r)
                                for (auto& p : ps) decode(p);
                            },
                            fl, 7) /
                        (rounds * layers);
    const Tensor4<const T> qv(q, {1, 1, Hq, D}), kt(bufs[0], {1, kv, Hkv, D}), vt(bufs[1], {1, kv, Hkv, D});
    const Tensor4<T> ov(o, {1, 1, Hq, D});
    const double e2e = host_us(
        [&] {
          (void)cuda::on_device(qv.data, kt.data, vt.data, ov.data);
          const auto p = make_params<T>(qv, kt, vt, ov, AttentionOptions{}, false);
          cuda::check_gpu_problem(p, AttentionOptions{});
          decode(p);
          ok(cudaStreamSynchronize(nullptr), "sync");
        },
        200);
    std::printf("%s kv%-6ld clean %.2f us (%.0f GB/s)  warm %.2f us  loop x%d %.2f us (%.0f GB/s)  e2e %.2f us\n", tag,
                long(kv), clean, cache / clean * 1e-3, warm, layers, loop, cache / loop * 1e-3, e2e);
    for (T* x : bufs) cudaFree(x);
    cudaFree(q), cudaFree(o);
  }
  {
    const size_t bytes = size_t(1) << 30;
    void *s = nullptr, *d = nullptr;
    ok(cudaMalloc(&s, bytes), "m"), ok(cudaMalloc(&d, bytes), "m"), ok(cudaMemset(s, 1, bytes), "memset");
    fl.mode = Flusher::Dirty;
    const double us = events_us([&] { ok(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice), "copy"); }, fl, 10);
    std::printf("%s copy 1 GiB: %.1f us = %.0f GB/s\n", tag, us, 2.0 * bytes / us * 1e-3);
  }
  ok(cudaDeviceSynchronize(), "end");
}
