// attnkit_cuda_bench: the CUDA kernels on the shapes of issue 5 (bf16, BSHD).
// Each measurement: warm-up, then reps timed one by one with CUDA events
// around the call, L2 flushed (a 256 MiB memset) before every rep; the median
// is reported. TFLOP/s count allowed pairs only (DESIGN §8):
// 2 * (D + Dv) * pairs, pairs from the mask's own tile classification.
// Decode: µs and GB/s of K + V read; plus the end-to-end latency of a B = 1
// decode call measured on the host clock, launch and synchronisation included,
// and decode loops (kind "decode-loop": one call per layer over distinct KV
// caches, back to back, no flush; decode_loop).
//
// --rope: only the fused-RoPE cases (plain / fused / on-the-fly / pre-pass / ReRoPE).
// --sm90-variants: only the sm90 wgmma configurations and the mma.sync kernel on
// the same prefill shapes; --prefill-only: the standard prefill rows alone.
// The standard prefill rows run what the front door runs (the sm90 kernel on
// an sm_90a device, else mma.sync).
// --decode: only the decode cases (with --variants: the decode variants too).
// --documents: only the document row and its arithmetic twin (EqualDocsMask).
// --decode-loops: only the decode loops (decode_loop) and the copy reference.
// --one-decode [--one-decode-b B] [--one-decode-kv N]: one decode shape (default
// B1 kv4096), 3 warm-up + 5 timed calls, for profilers; --one-decode-old: the
// same on the one-warp flash_fwd_kernel decode configuration.
//
// Output: a human table on stdout and, with --csv FILE, one line per case:
//   kind,name,mask,B,N,Hq,Hkv,D,ms,tflops,gbps,pairs
#include <cuda_runtime.h>

#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <attnkit/cuda/cuda.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"

using namespace attnkit;

using attnkit_bench::dev_random;
using attnkit_bench::Flusher;
using attnkit_bench::ok;
using attnkit_bench::read_kernel;

namespace {

// Allowed (i, j) pairs of one (batch, head), counted through classify: full
// tiles by area, partial tiles element by element.
template <class Mask>
double count_pairs(const Mask& m, int64_t b, int64_t Sq, int64_t Sk) {
  const SeqCtx ctx = SeqCtx::make(b, 0, Sq, Sk, Alignment::BottomRight);
  const int64_t t = 64;
  double n = 0;
  for (int64_t i0 = 0; i0 < Sq; i0 += t)
    for (int64_t j0 = 0; j0 < Sk; j0 += t) {
      const int64_t i1 = std::min(i0 + t, Sq), j1 = std::min(j0 + t, Sk);
      const TileKind k = m.classify(ctx, i0, i1, j0, j1);
      if (k == TileKind::Full) n += double(i1 - i0) * double(j1 - j0);
      if (k != TileKind::Partial) continue;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) n += m(ctx, i, j) ? 1 : 0;
    }
  return n;
}

template <class F>
double median_ms(F&& call, Flusher& flush, int reps) {
  return attnkit_bench::median_event_ms(call, flush, reps);
}

FILE* g_csv = nullptr;

__global__ void empty_kernel() {}

void report(const char* kind, const std::string& name, const char* mask, int64_t B, int64_t N, int64_t Hq, int64_t Hkv,
            int64_t D, double ms, double tflops, double gbps, double pairs) {
  std::printf("%-7s %-34s %-10s ms %9.4f  TFLOP/s %7.1f  GB/s %7.1f\n", kind, name.c_str(), mask, ms, tflops, gbps);
  std::fflush(stdout);
  if (g_csv)
    std::fprintf(g_csv, "%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%.6f,%.3f,%.3f,%.0f\n", kind, name.c_str(), mask,
                 (long long)B, (long long)N, (long long)Hq, (long long)Hkv, (long long)D, ms, tflops, gbps, pairs);
}

using T = bfloat16;
// An empty kernel launched the way a decode call launches flash_decode_kernel
// (its parameter bytes, grid, threads and dynamic smem): what the launch
// itself costs the host, apart from attnkit's own host code.
struct DecodeSizedParams {
  unsigned char bytes[sizeof(cuda::FwdArgs<T>) + sizeof(cuda::detail::KvTensorMaps)];
};
__global__ void empty_decode_shaped_kernel(const __grid_constant__ DecodeSizedParams) {}

// One prefill shape: B x N self attention, Hq / Hkv heads, head dim D; `run`
// launches one call (p, device mask) on the default stream.
template <int D, class Mask, class Run>
void prefill_run(const char* tag, const char* mask_name, const Mask& mask_host, const Mask& mask_dev, int64_t B,
                 int64_t N, int64_t Hq, int64_t Hkv, Flusher& flush, int reps, const Run& run) {
  T* q = dev_random<T>(size_t(B * N * Hq * D), 1);
  T* k = dev_random<T>(size_t(B * N * Hkv * D), 2);
  T* v = dev_random<T>(size_t(B * N * Hkv * D), 3);
  T* o = nullptr;
  ok(cudaMalloc(&o, size_t(B * N * Hq * D) * sizeof(T)), "cudaMalloc");
  AttentionOptions opts;
  const auto p = make_params<T>(Tensor4<const T>(q, {B, N, Hq, D}), Tensor4<const T>(k, {B, N, Hkv, D}),
                                Tensor4<const T>(v, {B, N, Hkv, D}), Tensor4<T>(o, {B, N, Hq, D}), opts, false);
  double pairs = 0;
  for (int64_t b = 0; b < B; ++b) pairs += count_pairs(mask_host, b, N, N);
  pairs *= double(Hq);
  const double ms = median_ms([&] { run(p, mask_dev); }, flush, reps);
  const double tflops = 2.0 * (2 * D) * pairs / (ms * 1e-3) / 1e12;
  const std::string name = std::string(tag) + "B" + std::to_string(B) + " N" + std::to_string(N) + " H" +
                           std::to_string(Hq) + "/" + std::to_string(Hkv) + " D" + std::to_string(D);
  report(tag[0] ? "variant" : "prefill", name, mask_name, B, N, Hq, Hkv, D, ms, tflops, 0, pairs);
  cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
}
// ... on the mma.sync kernel with configuration Cfg.
template <class Cfg, class Mask>
void prefill_cfg(const char* tag, const char* mask_name, const Mask& mask_host, const Mask& mask_dev, int64_t B,
                 int64_t N, int64_t Hq, int64_t Hkv, Flusher& flush, int reps) {
  prefill_run<Cfg::D>(
      tag, mask_name, mask_host, mask_dev, B, N, Hq, Hkv, flush, reps,
      [](const AttentionParams<T>& p, const Mask& m) { cuda::forward_with<Cfg>(p, m, nullptr, false); });
}
// ... on the sm90 wgmma kernel with configuration Cfg.
template <class Cfg, class Mask>
void prefill_sm90(const char* tag, const char* mask_name, const Mask& mask_host, const Mask& mask_dev, int64_t B,
                  int64_t N, int64_t Hq, int64_t Hkv, Flusher& flush, int reps) {
  if (!cuda::sm90::sm90_ready<Cfg, Mask>()) {
    std::printf("%-12s %s: skipped (no sm_90a code for this device)\n", tag, mask_name);
    return;
  }
  prefill_run<Cfg::D>(
      tag, mask_name, mask_host, mask_dev, B, N, Hq, Hkv, flush, reps,
      [](const AttentionParams<T>& p, const Mask& m) { cuda::sm90::forward_sm90_with<Cfg>(p, m, nullptr); });
}
// The standard rows: what the front door runs for a prefill of head dim D
// (dispatch.cuh's forward_plain: the sm90 kernel where it applies, else the
// mma.sync prefill configuration). A non-empty `tag` makes it a variant row.
template <int D, class Mask>
void prefill(const char* mask_name, const Mask& mask_host, const Mask& mask_dev, int64_t B, int64_t N, int64_t Hq,
             int64_t Hkv, Flusher& flush, int reps, const char* tag = "") {
  prefill_run<D>(tag, mask_name, mask_host, mask_dev, B, N, Hq, Hkv, flush, reps,
                 [](const AttentionParams<T>& p, const Mask& m) {
                   if (!cuda::sm90::try_forward_sm90_hdim<D>(p, m, nullptr)) cuda::forward_hdim<D>(p, m, nullptr);
                 });
}

template <class Cfg>
void decode_cfg(const char* tag, int64_t B, int64_t kv, Flusher& flush, int reps, bool latency,
                cuda::DecodeTuning tune = {}, const char* kind = nullptr) {
  constexpr int D = 128;
  const int64_t Hq = 32, Hkv = 8;
  T* q = dev_random<T>(size_t(B * Hq * D), 4);
  T* k = dev_random<T>(size_t(B * kv * Hkv * D), 5);
  T* v = dev_random<T>(size_t(B * kv * Hkv * D), 6);
  T* o = nullptr;
  ok(cudaMalloc(&o, size_t(B * Hq * D) * sizeof(T)), "cudaMalloc");
  AttentionOptions opts;
  const auto p = make_params<T>(Tensor4<const T>(q, {B, 1, Hq, D}), Tensor4<const T>(k, {B, kv, Hkv, D}),
                                Tensor4<const T>(v, {B, kv, Hkv, D}), Tensor4<T>(o, {B, 1, Hq, D}), opts, false);
  const double pairs = double(B) * Hq * kv;
  const double bytes = double(B) * kv * Hkv * D * 2 * 2;
  const double ms =
      median_ms([&] { cuda::forward_with<Cfg>(p, CausalMask{}, nullptr, true, cuda::FusedRope{}, tune); }, flush, reps);
  const std::string name =
      std::string(tag) + "decode B" + std::to_string(B) + " kv" + std::to_string(kv) + " H32/8 D128";
  report(kind     ? kind
         : tag[0] ? "variant"
                  : "decode",
         name, "causal", B, kv, Hq, Hkv, D, ms, 4.0 * D * pairs / (ms * 1e-3) / 1e12, bytes / (ms * 1e-3) / 1e9, pairs);
  if (latency) {
    // End to end as a caller sees it: the public entry (placement checks,
    // validation, launch of both kernels) plus a stream sync, host clock.
    const Tensor4<const T> qv(q, {B, 1, Hq, D}), kv_(k, {B, kv, Hkv, D}), vv(v, {B, kv, Hkv, D});
    const Tensor4<T> ov(o, {B, 1, Hq, D});
    auto call = [&] {
      const bool dev = cuda::on_device(qv.data, kv_.data, vv.data, ov.data);
      (void)dev;
      const auto pp = make_params<T>(qv, kv_, vv, ov, opts, false);
      cuda::attention_forward(pp, CausalMask{}, opts);
      ok(cudaStreamSynchronize(nullptr), "sync");
    };
    auto median_us = [](auto&& f, int n) { return attnkit_bench::median_host_us(f, n); };
    for (int w = 0; w < 20; ++w) call();
    const double e2e = median_us(call, 200);
    report("latency", "decode e2e B" + std::to_string(B) + " kv" + std::to_string(kv), "causal", B, kv, Hq, Hkv, D,
           e2e * 1e-3, 0, 0, pairs);
    // Where the host time goes (each piece alone, host clock, median of 200).
    const double t_place = median_us([&] { (void)cuda::on_device(qv.data, kv_.data, vv.data, ov.data); }, 200);
    const double t_sync = median_us([&] { ok(cudaStreamSynchronize(nullptr), "sync"); }, 200);
    const double t_alloc = median_us(
        [&] {
          void* ws = nullptr;
          ok(cudaMallocFromPoolAsync(&ws, 1 << 20, cuda::detail::workspace_pool(), nullptr), "pool alloc");
          ok(cudaFreeAsync(ws, nullptr), "pool free");
        },
        200);
    ok(cudaStreamSynchronize(nullptr), "sync");
    const double t_empty = median_us(
        [&] {
          empty_kernel<<<1, 32>>>();
          ok(cudaGetLastError(), "empty launch");
        },
        200);
    ok(cudaStreamSynchronize(nullptr), "sync");
    const int fat_smem = Cfg::kSmemBytes;
    ok(cudaFuncSetAttribute(empty_decode_shaped_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, fat_smem),
       "cudaFuncSetAttribute");
    const DecodeSizedParams fat{};
    const double t_empty_fat = median_us(
        [&] {
          empty_decode_shaped_kernel<<<dim3(16, unsigned(B * Hkv)), Cfg::kThreads, fat_smem>>>(fat);
          ok(cudaGetLastError(), "empty launch");
        },
        200);
    ok(cudaStreamSynchronize(nullptr), "sync");
    std::vector<double> t_fwd;  // public forward, host return only (synchronised outside the clock)
    for (int r = 0; r < 200; ++r) {
      const auto pp = make_params<T>(qv, kv_, vv, ov, opts, false);
      const auto t0 = std::chrono::steady_clock::now();
      cuda::attention_forward(pp, CausalMask{}, opts);
      t_fwd.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      ok(cudaStreamSynchronize(nullptr), "sync");
    }
    std::sort(t_fwd.begin(), t_fwd.end());
    const double t_params = median_us([&] { (void)make_params<T>(qv, kv_, vv, ov, opts, false); }, 200);
    const double t_getdev = median_us(
        [&] {
          int d = 0;
          ok(cudaGetDevice(&d), "cudaGetDevice");
        },
        200);
    const double t_sid = median_us(
        [&] {
          unsigned long long id = 0;
          ok(cudaStreamGetId(nullptr, &id), "cudaStreamGetId");
        },
        200);
    const double t_cap = median_us(
        [&] {
          cudaStreamCaptureStatus c{};
          ok(cudaStreamIsCapturing(nullptr, &c), "cudaStreamIsCapturing");
        },
        200);
    const auto pmaps = make_params<T>(qv, kv_, vv, ov, opts, false);
    const double t_maps = median_us(
        [&] {
          const auto m = cuda::detail::kv_tensor_maps(pmaps, cuda::detail::device_state(0), 32, 128, true);
          if (!m.use_tma) std::printf("tensor maps not encoded\n");
        },
        200);
    std::printf(
        "host    on_device %.1f us, make_params %.1f us, attention_forward (launch, no sync) %.1f us, pool "
        "alloc+free %.1f us, empty-kernel launch %.1f us (decode-shaped: %zu-byte parameters, %d KB smem: %.1f us), "
        "idle sync %.1f us, cudaGetDevice %.2f us, cudaStreamGetId %.2f us, cudaStreamIsCapturing %.2f us, K/V "
        "tensor maps %.2f us\n",
        t_place, t_params, t_fwd[t_fwd.size() / 2], t_alloc, t_empty, sizeof(DecodeSizedParams), fat_smem / 1024,
        t_empty_fat, t_sync, t_getdev, t_sid, t_cap, t_maps);
    report("host", "host on_device", "-", B, kv, Hq, Hkv, D, t_place * 1e-3, 0, 0, 0);
    report("host", "host make_params", "-", B, kv, Hq, Hkv, D, t_params * 1e-3, 0, 0, 0);
    report("host", "host K/V tensor maps", "-", B, kv, Hq, Hkv, D, t_maps * 1e-3, 0, 0, 0);
    report("host", "host attention_forward", "-", B, kv, Hq, Hkv, D, t_fwd[t_fwd.size() / 2] * 1e-3, 0, 0, 0);
    report("host", "host pool alloc+free", "-", B, kv, Hq, Hkv, D, t_alloc * 1e-3, 0, 0, 0);
    report("host", "host empty-kernel launch", "-", B, kv, Hq, Hkv, D, t_empty * 1e-3, 0, 0, 0);
    report("host", "host empty decode-shaped launch", "-", B, kv, Hq, Hkv, D, t_empty_fat * 1e-3, 0, 0, 0);
    report("host", "host idle stream sync", "-", B, kv, Hq, Hkv, D, t_sync * 1e-3, 0, 0, 0);

    // The same work through forward_with (the decode configuration, both
    // merges; same placement and GPU checks as the public entry).
    for (bool in_kernel : {false, true}) {
      auto call_fw = [&] {
        const bool dev = cuda::on_device(qv.data, kv_.data, vv.data, ov.data);
        (void)dev;
        const auto pp = make_params<T>(qv, kv_, vv, ov, opts, false);
        cuda::check_gpu_problem(pp, opts);
        cuda::forward_with<Cfg>(pp, CausalMask{}, nullptr, true, cuda::FusedRope{}, {0, 0, 0, in_kernel});
        ok(cudaStreamSynchronize(nullptr), "sync");
      };
      for (int w = 0; w < 20; ++w) call_fw();
      const double t = median_us(call_fw, 200);
      report("latency",
             std::string("decode e2e forward_with ") + (in_kernel ? "in-kernel-merge" : "merge-kernel") + " B" +
                 std::to_string(B) + " kv" + std::to_string(kv),
             "causal", B, kv, Hq, Hkv, D, t * 1e-3, 0, 0, pairs);
    }

    // The same call on a user stream, direct and replayed from a CUDA graph
    // captured from the public entry (a separate line: the direct number
    // above is the target's measure). Under capture the split-KV workspace
    // is graph-owned (alloc + ticket memset + free nodes).
    cudaStream_t st;
    ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
    AttentionOptions so = opts;
    so.cuda_stream = st;
    auto call_st = [&] {
      const bool dev = cuda::on_device(qv.data, kv_.data, vv.data, ov.data);
      (void)dev;
      const auto pp = make_params<T>(qv, kv_, vv, ov, so, false);
      cuda::attention_forward(pp, CausalMask{}, so);
      ok(cudaStreamSynchronize(st), "sync");
    };
    for (int w = 0; w < 20; ++w) call_st();
    const double e2e_st = median_us(call_st, 200);
    report("latency", "decode e2e stream B" + std::to_string(B) + " kv" + std::to_string(kv), "causal", B, kv, Hq, Hkv,
           D, e2e_st * 1e-3, 0, 0, pairs);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "begin capture");
    {
      const auto pp = make_params<T>(qv, kv_, vv, ov, so, false);
      cuda::attention_forward(pp, CausalMask{}, so);
    }
    ok(cudaStreamEndCapture(st, &graph), "end capture");
    ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    auto replay = [&] {
      ok(cudaGraphLaunch(exec, st), "graph launch");
      ok(cudaStreamSynchronize(st), "sync");
    };
    for (int w = 0; w < 20; ++w) replay();
    const double e2e_graph = median_us(replay, 200);
    report("latency", "decode e2e graph-replay B" + std::to_string(B) + " kv" + std::to_string(kv), "causal", B, kv, Hq,
           Hkv, D, e2e_graph * 1e-3, 0, 0, pairs);
    ok(cudaGraphExecDestroy(exec), "exec destroy");
    ok(cudaGraphDestroy(graph), "graph destroy");
    ok(cudaStreamDestroy(st), "stream destroy");
  }
  cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
}
// The default decode (what forward_hdim runs: flash_decode_kernel, Configs::DecodeCta).
void decode(int64_t B, int64_t kv, Flusher& flush, int reps, bool latency) {
  decode_cfg<cuda::Configs<T, 128>::DecodeCta>("", B, kv, flush, reps, latency);
}

// Kernel configurations tried against the defaults (warps, m-tiles per warp,
// key tile): what moves, and by how much, goes to NOTES.md.
void variants(Flusher& flush, int reps) {
  using cuda::FwdConfig;
  // Prefill: warps, m-tiles per warp (16 rows each), key tile; no GQA packing.
  prefill_cfg<FwdConfig<T, 128, 4, 1, 64, false>>("w4m1n64 ", "causal", CausalMask{}, CausalMask{}, 8, 4096, 16, 16,
                                                  flush, reps);
  prefill_cfg<FwdConfig<T, 128, 4, 2, 32, false>>("w4m2n32 ", "causal", CausalMask{}, CausalMask{}, 8, 4096, 16, 16,
                                                  flush, reps);
  prefill_cfg<FwdConfig<T, 128, 4, 1, 64, false>>("w4m1n64 ", "full", FullMask{}, FullMask{}, 8, 4096, 16, 16, flush,
                                                  reps);
  prefill_cfg<FwdConfig<T, 128, 4, 2, 32, false>>("w4m2n32 ", "full", FullMask{}, FullMask{}, 8, 4096, 16, 16, flush,
                                                  reps);
  prefill_cfg<FwdConfig<T, 64, 4, 1, 64, false>>("w4m1n64 ", "full", FullMask{}, FullMask{}, 8, 4096, 32, 32, flush,
                                                 reps);
  prefill_cfg<FwdConfig<T, 64, 4, 2, 128, false>>("w4m2n128 ", "full", FullMask{}, FullMask{}, 8, 4096, 32, 32, flush,
                                                  reps);
  prefill_cfg<FwdConfig<T, 64, 4, 1, 64, false>>("w4m1n64 ", "causal", CausalMask{}, CausalMask{}, 8, 4096, 32, 32,
                                                 flush, reps);
  prefill_cfg<FwdConfig<T, 128, 4, 1, 64, true>>("w4m1n64pack ", "causal", CausalMask{}, CausalMask{}, 8, 4096, 16, 16,
                                                 flush, reps);
}

// Equal documents of `len` keys as arithmetic (no id array, no search): the
// same allowed pairs as DocumentMask over ids j / len, the other way a user
// could write this mask. Measured slower than DocumentMask (Session 7: its
// 64-bit divisions per tile and row cost more than the id reads).
struct EqualDocsMask : MaskBase<EqualDocsMask> {
  int64_t len = 1;
  explicit EqualDocsMask(int64_t n) : len(n) {}
  ATTNKIT_HDI bool operator()(const SeqCtx& s, int64_t i, int64_t j) const { return s.pos(i) / len == j / len; }
  ATTNKIT_HDI TileKind classify(const SeqCtx& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t qa = s.pos(i0) / len, qb = s.pos(i1 - 1) / len, ka = j0 / len, kb = (j1 - 1) / len;
    if (qb < ka || kb < qa) return TileKind::Empty;
    return qa == qb && ka == kb && qa == ka ? TileKind::Full : TileKind::Partial;
  }
  ATTNKIT_HDI bool key_span(const SeqCtx& s, int64_t i, int64_t& lo, int64_t& hi) const {
    lo = s.pos(i) / len * len;
    hi = lo + len < s.kv_len ? lo + len : s.kv_len;
    return true;
  }
};

// 4 equal documents per sequence, causal inside each (flex's document
// shape), through DocumentMask (the standard row) and, with `arith`, also
// through EqualDocsMask (a variant row).
void document_rows(Flusher& flush, int reps, bool arith) {
  const int64_t B = 2, N = 16384;
  std::vector<int32_t> ids(size_t(B * N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < N; ++j) ids[size_t(b * N + j)] = int32_t(j / (N / 4));
  int32_t* d_ids = nullptr;
  ok(cudaMalloc(&d_ids, ids.size() * 4), "cudaMalloc");
  ok(cudaMemcpy(d_ids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  prefill<128>("document4", DocumentMask(ids.data(), N) & CausalMask{}, DocumentMask(d_ids, N) & CausalMask{}, B, N, 16,
               16, flush, reps);
  if (arith)
    prefill<128>("document4", EqualDocsMask(N / 4) & CausalMask{}, EqualDocsMask(N / 4) & CausalMask{}, B, N, 16, 16,
                 flush, reps, "arith-docs ");
  cudaFree(d_ids);
}

// The decode rows of the targets: the default decode under the bench's dirty
// flush (the rows torch_compare.py times PyTorch on), then the kv >= 32768
// shapes under the clean flush (kind "decode-clean": no write-back of the
// flush's dirty lines charged to the kernel), the decode loops, and the
// device's copy bandwidth measured in the same run, the ceiling the targets
// are quoted against.
void copy_bandwidth(Flusher& flush, int reps);
// A model's decode step as the GPU sees it: one call per layer, each layer
// with its own KV cache, back to back on one stream (no flush and no events
// between calls). The layers' caches take >= 200 MB together (4x the L2 and
// more), so every call reads its K and V from DRAM; the launch of a call
// overlaps the previous one's run, as in a real step. Per call: the time of
// `rounds` passes over the layers / calls, median over reps. `pdl` = 0:
// plain launches (a variant row), else the default programmatic dependent
// launch (pdl.cuh).
void decode_loop(int64_t B, int64_t kv, Flusher& flush, int reps, int pdl = -1) {
  using Cta = cuda::Configs<T, 128>::DecodeCta;
  constexpr int64_t D = 128, Hq = 32, Hkv = 8;
  const double cache_bytes = double(B) * kv * Hkv * D * 2 * 2;
  const int layers = std::max(4, static_cast<int>(std::ceil(200e6 / cache_bytes)));
  const int rounds = std::max(1, (32 + layers - 1) / layers);
  AttentionOptions opts;
  cuda::DecodeTuning tune;
  tune.pdl = pdl;
  T* q = dev_random<T>(size_t(B * Hq * D), 4);
  T* o = nullptr;
  ok(cudaMalloc(&o, size_t(B * Hq * D) * sizeof(T)), "cudaMalloc");
  std::vector<T*> kvs;
  std::vector<AttentionParams<T>> ps;
  for (int l = 0; l < layers; ++l) {
    T* k = dev_random<T>(size_t(B * kv * Hkv * D), 5 + 2 * l);
    T* v = dev_random<T>(size_t(B * kv * Hkv * D), 6 + 2 * l);
    kvs.push_back(k), kvs.push_back(v);
    ps.push_back(make_params<T>(Tensor4<const T>(q, {B, 1, Hq, D}), Tensor4<const T>(k, {B, kv, Hkv, D}),
                                Tensor4<const T>(v, {B, kv, Hkv, D}), Tensor4<T>(o, {B, 1, Hq, D}), opts, false));
  }
  auto step = [&] {
    for (int r = 0; r < rounds; ++r)
      for (const auto& p : ps) cuda::forward_with<Cta>(p, CausalMask{}, nullptr, true, cuda::FusedRope{}, tune);
  };
  // median_ms's passes over the layers, with no flush between them.
  const Flusher::Mode mode = flush.mode;
  flush.mode = Flusher::None;
  const double ms = median_ms(step, flush, std::max(3, reps / 3)) / (rounds * layers);
  flush.mode = mode;
  const double pairs = double(B) * Hq * kv;
  report(pdl ? "decode-loop" : "variant",
         std::string(pdl ? "" : "plain-launch ") + "decode loop B" + std::to_string(B) + " kv" + std::to_string(kv) +
             " x" + std::to_string(layers) + " layers",
         "causal", B, kv, Hq, Hkv, D, ms, 4.0 * D * pairs / (ms * 1e-3) / 1e12, cache_bytes / (ms * 1e-3) / 1e9, pairs);
  for (T* x : kvs) cudaFree(x);
  cudaFree(q), cudaFree(o);
}

void decode_loop_rows(Flusher& flush, int reps) {
  for (int64_t kv : {4096, 32768, 131072})
    for (int pdl : {-1, 0}) decode_loop(1, kv, flush, reps, pdl);  // programmatic dependent launch (the default), plain
  decode_loop(8, 32768, flush, reps);
}

void decode_rows(Flusher& flush, int reps) {
  using Cta = cuda::Configs<T, 128>::DecodeCta;
  for (int64_t B : {1, 8})
    for (int64_t kv : {4096, 32768, 131072}) decode(B, kv, flush, reps, B == 1 && kv == 4096);
  flush.mode = Flusher::Clean;
  for (int64_t B : {1, 8})
    for (int64_t kv : {32768, 131072}) decode_cfg<Cta>("clean-flush ", B, kv, flush, reps, false, {}, "decode-clean");
  flush.mode = Flusher::Dirty;
  decode_loop_rows(flush, reps);
  copy_bandwidth(flush, reps);
}

// cudaMemcpyAsync of 1 GiB, device to device: bytes read + written over the
// time (the dirty flush before each rep; at 1 GiB it moves the time < 1%).
void copy_bandwidth(Flusher& flush, int reps) {
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  ok(cudaMalloc(&src, bytes), "cudaMalloc"), ok(cudaMalloc(&dst, bytes), "cudaMalloc");
  ok(cudaMemset(src, 1, bytes), "memset");
  const double ms =
      median_ms([&] { ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy"); }, flush, reps);
  report("copy", "device copy 1 GiB (read + write)", "-", 1, 0, 0, 0, 0, ms, 0, 2.0 * double(bytes) / (ms * 1e-3) / 1e9,
         0);
  cudaFree(src), cudaFree(dst);
}

// The read floor of a decode shape: its K and V bytes read by read_kernel.
void read_floor(int64_t B, int64_t kv, Flusher& flush, int reps) {
  const size_t bytes = size_t(B * kv * 8 * 128 * 2);  // one of K / V (Hkv 8, D 128, bf16)
  void *k = nullptr, *v = nullptr;
  ok(cudaMalloc(&k, bytes), "cudaMalloc"), ok(cudaMalloc(&v, bytes), "cudaMalloc");
  ok(cudaMemset(k, 1, bytes), "memset"), ok(cudaMemset(v, 2, bytes), "memset");
  int sms = 0;
  ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "attr");
  const double ms = median_ms(
      [&] {
        read_kernel<<<sms * 8, 256>>>(static_cast<const uint4*>(k), static_cast<const uint4*>(v), bytes / 16,
                                      flush.sink);
      },
      flush, reps);
  report("variant", "read-floor decode B" + std::to_string(B) + " kv" + std::to_string(kv) + " H32/8 D128", "-", B, kv,
         32, 8, 128, ms, 0, 2.0 * double(bytes) / (ms * 1e-3) / 1e9, 0);
  cudaFree(k), cudaFree(v);
}

// flash_decode_kernel with its K/V copied by cp.async instead of TMA (Session 6).
cuda::DecodeTuning cp_async_copies() {
  cuda::DecodeTuning t;
  t.tma = 0;
  return t;
}

// Decode variants: the one-warp flash_fwd_kernel decode (the default before
// Session 5), the decode CTA's warps / key tile / ring depth, the split
// plan's knobs, the in-kernel merge and cp.async copies (TMA is the default
// since Session 6), on the shapes of the targets.
void decode_variants(Flusher& flush, int reps) {
  using cuda::DecodeConfig;
  using cuda::FwdConfig;
  using W1N32 = FwdConfig<T, 128, 1, 1, 32>;  // = Configs::Decode
  using Cta = cuda::Configs<T, 128>::DecodeCta;
  // (Runs 1-3, 2026-11-22, one-warp kernel: min2 / min8 tiles per split, 6 CTAs/SM, BlockN 64,
  // 2 warps, chunked in-kernel merges; see NOTES-decode.md.)
  for (int64_t kv : {4096, 32768, 131072}) {
    decode_cfg<W1N32>("old-w1n32 ", 1, kv, flush, reps, false);
    decode_cfg<Cta>("merge-kernel ", 1, kv, flush, reps, false, {0, 0, 0, false});
    decode_cfg<DecodeConfig<T, 128, 4, 32, 2>>("w4n32s2 ", 1, kv, flush, reps, false);
    decode_cfg<DecodeConfig<T, 128, 8, 16, 3>>("w8n16s3 ", 1, kv, flush, reps, false);
    decode_cfg<DecodeConfig<T, 128, 2, 32, 3>>("w2n32s3 ", 1, kv, flush, reps, false);
    decode_cfg<Cta>("min-tiles4 ", 1, kv, flush, reps, false, {4});
    decode_cfg<Cta>("min-tiles16 ", 1, kv, flush, reps, false, {16});
    decode_cfg<Cta>("cp-async ", 1, kv, flush, reps, false, cp_async_copies());
    read_floor(1, kv, flush, reps);
  }
  for (int64_t kv : {4096, 32768}) {
    decode_cfg<W1N32>("old-w1n32 ", 8, kv, flush, reps, false);
    decode_cfg<Cta>("merge-kernel ", 8, kv, flush, reps, false, {0, 0, 0, false});
    decode_cfg<DecodeConfig<T, 128, 8, 16, 3>>("w8n16s3 ", 8, kv, flush, reps, false);
    decode_cfg<DecodeConfig<T, 128, 2, 32, 3>>("w2n32s3 ", 8, kv, flush, reps, false);
    decode_cfg<Cta>("cp-async ", 8, kv, flush, reps, false, cp_async_copies());
    read_floor(8, kv, flush, reps);
  }
  // The default configuration under the other two flush modes (see Flusher).
  for (auto mode : {Flusher::Clean, Flusher::None}) {
    flush.mode = mode;
    const char* tag = mode == Flusher::Clean ? "clean-flush " : "no-flush ";
    for (int64_t kv : {4096, 32768, 131072}) decode_cfg<Cta>(tag, 1, kv, flush, reps, false);
    decode_cfg<Cta>(tag, 8, 32768, flush, reps, false);
    for (int64_t kv : {4096, 32768, 131072}) read_floor(1, kv, flush, reps);
    decode_cfg<Cta>(mode == Flusher::Clean ? "clean-flush merge-kernel " : "no-flush merge-kernel ", 1, 4096, flush,
                    reps, false, {0, 0, 0, false});
  }
  flush.mode = Flusher::Dirty;
}

// The sm90 wgmma kernel's configurations (key tile) against the mma.sync
// prefill kernel on the same shapes (NOTES-sm90.md).
void variants_sm90(Flusher& flush, int reps) {
  using cuda::sm90::Sm90Config;
  for (int64_t N : {1024, 4096, 16384}) {
    const int64_t B = 32768 / N;
    prefill_sm90<Sm90Config<T, 128, 128>>("sm90n128 ", "full", FullMask{}, FullMask{}, B, N, 16, 16, flush, reps);
    prefill_sm90<Sm90Config<T, 128, 128>>("sm90n128 ", "causal", CausalMask{}, CausalMask{}, B, N, 16, 16, flush, reps);
    prefill_sm90<Sm90Config<T, 128, 64>>("sm90n64 ", "full", FullMask{}, FullMask{}, B, N, 16, 16, flush, reps);
    prefill_sm90<Sm90Config<T, 128, 64>>("sm90n64 ", "causal", CausalMask{}, CausalMask{}, B, N, 16, 16, flush, reps);
    // One warpgroup (64 rows) per CTA, two CTAs per SM.
    prefill_sm90<Sm90Config<T, 128, 64, 1, 2>>("sm90w1n64 ", "full", FullMask{}, FullMask{}, B, N, 16, 16, flush, reps);
    prefill_sm90<Sm90Config<T, 128, 64, 1, 2>>("sm90w1n64 ", "causal", CausalMask{}, CausalMask{}, B, N, 16, 16, flush,
                                               reps);
    prefill_cfg<cuda::Configs<T, 128>::Prefill>("mma.sync ", "full", FullMask{}, FullMask{}, B, N, 16, 16, flush, reps);
    prefill_cfg<cuda::Configs<T, 128>::Prefill>("mma.sync ", "causal", CausalMask{}, CausalMask{}, B, N, 16, 16, flush,
                                                reps);
    prefill_sm90<Sm90Config<T, 64, 128>>("sm90n128 ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush, reps);
    prefill_sm90<Sm90Config<T, 64, 128>>("sm90n128 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush, reps);
    prefill_sm90<Sm90Config<T, 64, 64>>("sm90n64 ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush, reps);
    prefill_sm90<Sm90Config<T, 64, 64>>("sm90n64 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush, reps);
    prefill_sm90<Sm90Config<T, 64, 64, 2, 2>>("sm90n64x2 ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush, reps);
    prefill_sm90<Sm90Config<T, 64, 64, 2, 2>>("sm90n64x2 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush,
                                              reps);
    prefill_sm90<Sm90Config<T, 64, 128, 1, 2>>("sm90w1n128 ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush,
                                               reps);
    prefill_sm90<Sm90Config<T, 64, 128, 1, 2>>("sm90w1n128 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush,
                                               reps);
    prefill_sm90<Sm90Config<T, 64, 64, 1, 3>>("sm90w1n64x3 ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush,
                                              reps);
    prefill_sm90<Sm90Config<T, 64, 64, 1, 3>>("sm90w1n64x3 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush,
                                              reps);
    prefill_sm90<Sm90Config<T, 64, 64, 1, 2>>("sm90w1n64x2 ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush,
                                              reps);
    prefill_cfg<cuda::Configs<T, 64>::Prefill>("mma.sync ", "full", FullMask{}, FullMask{}, B, N, 32, 32, flush, reps);
    prefill_cfg<cuda::Configs<T, 64>::Prefill>("mma.sync ", "causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush,
                                               reps);
  }
  prefill_cfg<cuda::Configs<T, 128>::Prefill>("mma.sync ", "window1024", SlidingWindowMask(1024),
                                              SlidingWindowMask(1024), 2, 16384, 16, 16, flush, reps);
  prefill_cfg<cuda::Configs<T, 128>::Prefill>("mma.sync ", "prefix1024", PrefixLMMask(1024), PrefixLMMask(1024), 8,
                                              4096, 16, 16, flush, reps);
}

// Fused RoPE against the same shape without RoPE, the unfused pre-pass
// (rotated copies of q and k, then the plain kernel) and the fused kernel with
// angles computed on the fly instead of the cos/sin table; ReRoPE with a
// window that makes the diagonal tiles straddle it. Llama-3 shapes: GQA 32/8,
// D 128, Llama-3.1 scaling; every RoPE variant includes its table build.
void rope_cases(Flusher& flush, int reps) {
  constexpr int D = 128;
  const int64_t Hq = 32, Hkv = 8;
  const RopeConfig llama = RopeConfig::llama3_1(RopeStyle::Half);
  const RopeConfig rerope = RopeConfig::rerope(RopeStyle::Half, 512, 500000.0);
  struct Shape {
    int64_t B, Sq, Sk;
  };
  for (const Shape sh : {Shape{8, 4096, 4096}, Shape{1, 1, 32768}, Shape{8, 1, 32768}}) {
    const int64_t B = sh.B, Sq = sh.Sq, Sk = sh.Sk;
    T* q = dev_random<T>(size_t(B * Sq * Hq * D), 7);
    T* k = dev_random<T>(size_t(B * Sk * Hkv * D), 8);
    T* v = dev_random<T>(size_t(B * Sk * Hkv * D), 9);
    T* o = nullptr;
    ok(cudaMalloc(&o, size_t(B * Sq * Hq * D) * sizeof(T)), "cudaMalloc");
    AttentionOptions opts;
    const auto p = make_params<T>(Tensor4<const T>(q, {B, Sq, Hq, D}), Tensor4<const T>(k, {B, Sk, Hkv, D}),
                                  Tensor4<const T>(v, {B, Sk, Hkv, D}), Tensor4<T>(o, {B, Sq, Hq, D}), opts, false);
    const rope::RopeParams rp = rope::resolve(llama, D, Sk);
    const rope::RopeParams rr = rope::resolve(rerope, D, Sk);
    double pairs = 0;
    for (int64_t b = 0; b < B; ++b) pairs += count_pairs(CausalMask{}, b, Sq, Sk);
    pairs *= double(Hq);
    const std::string base = (Sq > 1 ? "prefill B" : "decode B") + std::to_string(B) + " N" + std::to_string(Sq) + "/" +
                             std::to_string(Sk) + " H32/8 D128 ";
    auto one = [&](const char* what, auto&& call) {
      const double ms = median_ms(call, flush, reps);
      report("rope", base + what, "causal", B, Sk, Hq, Hkv, D, ms, 4.0 * D * pairs / (ms * 1e-3) / 1e12,
             double(B) * Sk * Hkv * D * 2 * 2 / (ms * 1e-3) / 1e9, pairs);
    };
    one("plain", [&] { cuda::forward_hdim<D>(p, CausalMask{}, nullptr); });
    one("fused", [&] { cuda::forward_rope(p, CausalMask{}, rp, nullptr, true); });
    one("fused-otf", [&] { cuda::forward_rope(p, CausalMask{}, rp, nullptr, false); });
    one("prepass", [&] {
      void* ws = nullptr;
      const auto pr = cuda::rope_prepass(p, rp, nullptr, cuda::detail::workspace_pool(), &ws);
      cuda::forward_hdim<D>(pr, CausalMask{}, nullptr);
      ok(cudaFreeAsync(ws, nullptr), "free");
    });
    one("rerope512", [&] { cuda::forward_rope(p, CausalMask{}, rr, nullptr, true); });
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  bool quick = false, try_variants = false, one = false, rope_only = false, sm90_variants = false, prefill_only = false,
       decode_only = false, one_decode = false, one_decode_old = false, documents = false, loops_only = false;
  int64_t one_b = 1, one_kv = 4096;
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--csv") && a + 1 < argc) g_csv = std::fopen(argv[++a], "w");
    if (!std::strcmp(argv[a], "--reps") && a + 1 < argc) reps = std::atoi(argv[++a]);
    if (!std::strcmp(argv[a], "--quick")) quick = true;
    if (!std::strcmp(argv[a], "--variants")) try_variants = true;
    if (!std::strcmp(argv[a], "--sm90-variants")) sm90_variants = true;  // only the sm90 / mma.sync prefill rows
    if (!std::strcmp(argv[a], "--prefill-only")) prefill_only = true;    // the standard prefill rows, no decode / RoPE
    if (!std::strcmp(argv[a], "--one")) one = true;                      // one causal prefill, for profilers
    if (!std::strcmp(argv[a], "--rope")) rope_only = true;               // the fused-RoPE cases only
    if (!std::strcmp(argv[a], "--decode")) decode_only = true;           // decode cases (and decode variants) only
    if (!std::strcmp(argv[a], "--documents")) documents = true;          // the document rows (and the arithmetic one)
    if (!std::strcmp(argv[a], "--decode-loops")) loops_only = true;      // the decode loops and the copy reference
    if (!std::strcmp(argv[a], "--one-decode")) one_decode = true;        // one B1 kv4096 decode, for profilers
    if (!std::strcmp(argv[a], "--one-decode-old")) one_decode = one_decode_old = true;  // ... on the one-warp kernel
    if (!std::strcmp(argv[a], "--one-decode-b") && a + 1 < argc) one_b = std::atoll(argv[++a]);    // its batch
    if (!std::strcmp(argv[a], "--one-decode-kv") && a + 1 < argc) one_kv = std::atoll(argv[++a]);  // its kv length
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("attnkit_cuda_bench: no usable CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop{};
  ok(cudaGetDeviceProperties(&prop, 0), "props");
  std::printf("device: %s, %d SMs, L2 %d MiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  if (g_csv) std::fprintf(g_csv, "kind,name,mask,B,N,Hq,Hkv,D,ms,tflops,gbps,pairs\n");
  Flusher flush;
  if (one) {
    prefill<128>("causal", CausalMask{}, CausalMask{}, 8, 4096, 16, 16, flush, 1);
    return 0;
  }
  if (one_decode) {
    if (one_decode_old)
      decode_cfg<cuda::Configs<T, 128>::Decode>("old-w1n32 ", one_b, one_kv, flush, 5, false);
    else
      decode(one_b, one_kv, flush, 5, false);
    return 0;
  }
  if (documents) {
    document_rows(flush, reps, true);
    if (g_csv) std::fclose(g_csv);
    return 0;
  }
  if (loops_only) {
    decode_loop_rows(flush, reps);
    copy_bandwidth(flush, reps);
    if (g_csv) std::fclose(g_csv);
    return 0;
  }
  if (decode_only) {
    if (try_variants) decode_variants(flush, reps);
    decode_rows(flush, reps);
    if (g_csv) std::fclose(g_csv);
    return 0;
  }
  if (try_variants || sm90_variants) variants_sm90(flush, reps);
  if (sm90_variants) return 0;
  if (try_variants) {
    variants(flush, reps);
    decode_variants(flush, reps);
  }
  if (rope_only) {
    rope_cases(flush, reps);
    return 0;
  }

  const std::vector<int64_t> Ns = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{1024, 4096, 16384};
  for (int64_t N : Ns) {
    const int64_t B = 32768 / N;
    prefill<128>("full", FullMask{}, FullMask{}, B, N, 16, 16, flush, reps);
    prefill<128>("causal", CausalMask{}, CausalMask{}, B, N, 16, 16, flush, reps);
    prefill<64>("full", FullMask{}, FullMask{}, B, N, 32, 32, flush, reps);
    prefill<64>("causal", CausalMask{}, CausalMask{}, B, N, 32, 32, flush, reps);
  }
  prefill<128>("causal", CausalMask{}, CausalMask{}, 8, 4096, 32, 8, flush, reps);  // GQA
  for (int64_t w : {1024, 4096}) {
    const std::string name = "window" + std::to_string(w);
    prefill<128>(name.c_str(), SlidingWindowMask(w), SlidingWindowMask(w), 2, 16384, 16, 16, flush, reps);
  }
  prefill<128>("prefix1024", PrefixLMMask(1024), PrefixLMMask(1024), 8, 4096, 16, 16, flush, reps);
  document_rows(flush, reps, try_variants);
  if (prefill_only) {
    if (g_csv) std::fclose(g_csv);
    return 0;
  }
  decode_rows(flush, reps);
  rope_cases(flush, reps);
  if (g_csv) std::fclose(g_csv);
  return 0;
}
