// fp16 storage on the GPU, and the errors the GPU path raises.
#include <functional>
#include <thread>

#include "masks.cuh"

using namespace attnkit_cuda_test;
using H = attnkit::half;

TEST_CASE("cuda f16: causal, full and window", "[cuda][f16]") {
  for (int64_t sq : {1, 7, 65, 257}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 300, c.Hq = 8, c.Hkv = 2;
    check_case<H, 128, Entry::Dispatch>(c, CausalMask{});
    check_case<H, 128, Entry::Dispatch>(c, FullMask{});
    c.D = 64;
    check_case<H, 64, Entry::Dispatch>(c, CausalMask{});
  }
  Case c;
  c.Hq = 4, c.Hkv = 1;
  c.seq_q = {33, 1, 200};
  c.seq_k = {33, 600, 250};
  c.softcap = 20.f, c.sink = true, c.alibi = true;
  check_case<H, 128, Entry::Dispatch>(c, CausalMask{});
}

namespace {
template <class T>
struct Tensors {
  DevBuf<T> q{2 * 8 * 4 * 128}, k{2 * 8 * 2 * 128}, v{2 * 8 * 2 * 128}, o{2 * 8 * 4 * 128};
  Tensor4<const T> qv() const { return Tensor4<const T>(q.ptr, {2, 8, 4, 128}); }
  Tensor4<const T> kv() const { return Tensor4<const T>(k.ptr, {2, 8, 2, 128}); }
  Tensor4<const T> vv() const { return Tensor4<const T>(v.ptr, {2, 8, 2, 128}); }
  Tensor4<T> ov() const { return Tensor4<T>(o.ptr, {2, 8, 4, 128}); }
};
std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const attnkit::Error& e) {
    return e.what();
  }
  return "<no attnkit::Error>";
}
}  // namespace

TEST_CASE("cuda errors: placement, dtype, head dim, host side arrays", "[cuda][errors]") {
  Tensors<H> t;
  std::vector<H> host(2 * 8 * 2 * 128);
  CHECK(cuda::on_device(t.q.ptr, t.k.ptr, t.v.ptr, t.o.ptr));
  CHECK_FALSE(cuda::on_device(host.data(), host.data(), host.data(), host.data()));
  const std::string mixed = what_of([&] { cuda::on_device(t.q.ptr, host.data(), t.v.ptr, t.o.ptr); });
  CHECK(mixed.find("k is host") != std::string::npos);
  CHECK(mixed.find("q is device") != std::string::npos);
  // Pinned host memory is host; managed memory and interior device pointers
  // are device; a thread with no current context yet gets the same answers.
  void *pinned = nullptr, *managed = nullptr;
  REQUIRE(cudaMallocHost(&pinned, 4096) == cudaSuccess);
  REQUIRE(cudaMallocManaged(&managed, 4096) == cudaSuccess);
  CHECK_FALSE(cuda::on_device(pinned, pinned, pinned, pinned));
  CHECK(cuda::on_device(managed, managed, managed, managed));
  CHECK(what_of([&] { cuda::on_device(t.q.ptr, t.k.ptr, pinned, t.o.ptr); }).find("v is host") != std::string::npos);
  CHECK(cuda::on_device(t.q.ptr + 7, t.k.ptr + 128, t.v.ptr + 1, t.o.ptr + 3));
  bool other_dev = false, other_host = true;
  std::thread([&] {
    other_dev = cuda::on_device(t.q.ptr, t.k.ptr, t.v.ptr, t.o.ptr);
    other_host = cuda::on_device(host.data(), pinned, host.data(), host.data());
  }).join();
  CHECK(other_dev);
  CHECK_FALSE(other_host);
  CHECK(cudaFreeHost(pinned) == cudaSuccess);
  CHECK(cudaFree(managed) == cudaSuccess);

  AttentionOptions o;
  std::vector<float> host_lse(2 * 4 * 8);
  o.lse = host_lse.data();
  const auto p = make_params<H>(t.qv(), t.kv(), t.vv(), t.ov(), o, false);
  CHECK(what_of([&] { cuda::attention_forward(p, CausalMask{}, o); }).find("lse") != std::string::npos);
  AttentionOptions o2;
  RopeConfig rerope = RopeConfig::standard(RopeStyle::Half);
  rerope.relative = RopeRelative::ReRoPE;
  rerope.window = 16;
  o2.rope = &rerope;
  // ReRoPE runs fused on the GPU now; a non-causal mask is still an Error naming it.
  const auto p2 = make_params<H>(t.qv(), t.kv(), t.vv(), t.ov(), o2, false);
  CHECK(what_of([&] { cuda::attention_forward(p2, FullMask{}, o2); }).find("ReRoPE") != std::string::npos);

  DevBuf<float> fq(2 * 8 * 4 * 128), fk(2 * 8 * 2 * 128), fv(2 * 8 * 2 * 128), fo(2 * 8 * 4 * 128);
  const auto pf = make_params<float>(
      Tensor4<const float>(fq.ptr, {2, 8, 4, 128}), Tensor4<const float>(fk.ptr, {2, 8, 2, 128}),
      Tensor4<const float>(fv.ptr, {2, 8, 2, 128}), Tensor4<float>(fo.ptr, {2, 8, 4, 128}), AttentionOptions{}, false);
  CHECK(what_of([&] { cuda::attention_forward(pf, CausalMask{}, AttentionOptions{}); }).find("float32") !=
        std::string::npos);

  DevBuf<H> q80(2 * 8 * 4 * 80), k80(2 * 8 * 2 * 80), o80(2 * 8 * 4 * 80);
  const auto p80 = make_params<H>(Tensor4<const H>(q80.ptr, {2, 8, 4, 80}), Tensor4<const H>(k80.ptr, {2, 8, 2, 80}),
                                  Tensor4<const H>(k80.ptr, {2, 8, 2, 80}), Tensor4<H>(o80.ptr, {2, 8, 4, 80}),
                                  AttentionOptions{}, false);
  CHECK(what_of([&] {
          cuda::attention_forward(p80, CausalMask{}, AttentionOptions{});
        }).find("head_dim (80) must be 64, 96, 128 or 256") != std::string::npos);
}
