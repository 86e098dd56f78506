// Layouts, GQA, head dims, lengths, decode and logit options on the GPU (bf16).
#include "masks.cuh"

using namespace attnkit_cuda_test;
using T = attnkit::bfloat16;

TEST_CASE("cuda: head dims 64, 96, 128, 256", "[cuda][hdim]") {
  for (int64_t n : {1, 63, 200}) {
    Case c;
    c.B = 2, c.Sq = n, c.Sk = n + 5, c.Hq = 4, c.Hkv = 2;
    c.D = 64;
    check_case<T, 64>(c, CausalMask{}, Entry::Dispatch);
    check_case<T, 64>(c, FullMask{}, Entry::Dispatch);
    c.D = 96;
    check_case<T, 96>(c, CausalMask{}, Entry::Dispatch);
    check_case<T, 96>(c, FullMask{}, Entry::Dispatch);
    c.D = 256;
    check_case<T, 256>(c, CausalMask{}, Entry::Dispatch);
    check_case<T, 256>(c, FullMask{}, Entry::Dispatch);
  }
}

TEST_CASE("cuda: odd lengths", "[cuda][lengths]") {
  for (int64_t n : {1, 7, 63, 65, 257, 1000}) {
    Case c;
    c.B = 1, c.Sq = n, c.Sk = n, c.Hq = 2, c.Hkv = 1;
    check_case<T, 128>(c, CausalMask{});
    check_case<T, 128>(c, FullMask{});
    c.Sk = n + 13;  // bottom-right with a KV-cache prefix
    check_case<T, 128>(c, CausalMask{});
  }
}

TEST_CASE("cuda: GQA ratios 1, 4, 8 and MQA", "[cuda][gqa]") {
  for (int64_t hkv : {8, 2, 1}) {
    for (int64_t sq : {1, 100}) {
      Case c;
      c.B = 2, c.Sq = sq, c.Sk = 300, c.Hq = 8, c.Hkv = hkv;
      check_case<T, 128>(c, CausalMask{});
    }
  }
  Case c;  // MQA with 16 query heads
  c.B = 1, c.Sq = 70, c.Sk = 70, c.Hq = 16, c.Hkv = 1;
  check_case<T, 128>(c, CausalMask{});
}

TEST_CASE("cuda: padded lengths, including empty sequences", "[cuda][padded]") {
  Case c;
  c.B = 4, c.Sq = 130, c.Sk = 300, c.Hq = 4, c.Hkv = 2;
  c.q_lens = {130, 17, 0, 64};
  c.kv_lens = {300, 0, 5, 64};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
  check_case<T, 128>(c, SlidingWindowMask(33));
  c.Sq = 9;  // decode path with padding
  c.q_lens = {9, 1, 0, 4};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: varlen", "[cuda][varlen]") {
  Case c;
  c.Hq = 8, c.Hkv = 2;
  c.seq_q = {100, 1, 0, 257, 63};
  c.seq_k = {100, 40, 7, 257, 300};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
  check_case<T, 128>(c, SlidingWindowMask(50));
  c.seq_q = {1, 16, 5, 0};  // decode-sized varlen
  c.seq_k = {1000, 77, 0, 4000};
  check_case<T, 128>(c, CausalMask{});
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: fully masked rows give out 0 and lse -inf", "[cuda][masked]") {
  Case c;  // bottom-right with more queries than keys: the first rows see nothing
  c.B = 2, c.Sq = 150, c.Sk = 40, c.Hq = 2, c.Hkv = 1;
  check_case<T, 128>(c, CausalMask{});
  c.Sq = 12;  // decode path
  c.Sk = 5;
  check_case<T, 128>(c, CausalMask{});
  c.Sk = 0;  // no keys at all
  c.Sq = 33;
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: decode Sq 1..16, Sk up to 32768", "[cuda][decode]") {
  for (int64_t sq : {1, 2, 5, 16}) {
    for (int64_t sk : {1, 100, 4097, 32768}) {
      Case c;
      c.B = 2, c.Sq = sq, c.Sk = sk, c.Hq = 8, c.Hkv = 2;
      if (sq * sk > 100000) c.B = 1;
      check_case<T, 128>(c, CausalMask{});
    }
  }
  Case c;  // MQA decode, group of 8 packed
  c.B = 3, c.Sq = 2, c.Sk = 5000, c.Hq = 8, c.Hkv = 1;
  check_case<T, 128>(c, FullMask{});
}

TEST_CASE("cuda: softcap, ALiBi and sink logits", "[cuda][logits]") {
  for (int64_t sq : {1, 4, 130}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 700, c.Hq = 4, c.Hkv = 2;
    c.softcap = 5.0f;
    check_case<T, 128>(c, CausalMask{});
    c.softcap = 0.f;
    c.alibi = true;
    check_case<T, 128>(c, CausalMask{});
    c.alibi = false;
    c.sink = true;
    check_case<T, 128>(c, CausalMask{});
    c.softcap = 30.f, c.alibi = true;
    check_case<T, 128>(c, SlidingWindowMask(100));
  }
}

TEST_CASE("cuda: top-left alignment", "[cuda][align]") {
  for (int64_t sq : {3, 100}) {
    Case c;
    c.B = 2, c.Sq = sq, c.Sk = 333, c.Hq = 4, c.Hkv = 4, c.align = Alignment::TopLeft;
    check_case<T, 128>(c, CausalMask{});
  }
}

TEST_CASE("cuda: runs on a user stream", "[cuda][stream]") {
  cudaStream_t st;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  Case c;
  c.B = 2, c.Sq = 100, c.Sk = 100, c.Hq = 4, c.Hkv = 2, c.stream = st;
  check_case<T, 128>(c, CausalMask{});
  c.Sq = 1, c.Sk = 3000;
  check_case<T, 128>(c, CausalMask{});
  cudaStreamDestroy(st);
}

TEST_CASE("cuda: a 1M-token KV cache (64-bit index math)", "[cuda][large]") {
  Case c;
  c.B = 2, c.Sq = 1, c.Sk = (int64_t(1) << 20) + 3, c.Hq = 2, c.Hkv = 1, c.D = 64;
  check_case<T, 64>(c, CausalMask{}, Entry::Dispatch);
}

TEST_CASE("cuda: RoPE (fused): styles, partial rotary, scalings, alignments, varlen", "[cuda][rope]") {
  RopeConfig half = RopeConfig::standard(RopeStyle::Half);
  RopeConfig inter = RopeConfig::standard(RopeStyle::Interleaved, 500000.0);
  RopeConfig partial = RopeConfig::standard(RopeStyle::Half, 10000.0, 64);  // rotary_dim 64 of 128
  RopeConfig llama3 = RopeConfig::standard(RopeStyle::Half, 500000.0);
  llama3.scaling = RopeScaling::Llama3, llama3.factor = 8.0, llama3.original_max_position = 8192;
  RopeConfig yarn = RopeConfig::standard(RopeStyle::Half);
  yarn.scaling = RopeScaling::YaRN, yarn.factor = 4.0, yarn.original_max_position = 256;
  for (const RopeConfig* cfg : {&half, &inter, &partial, &llama3, &yarn}) {
    Case c;
    c.B = 2, c.Sq = 100, c.Sk = 300, c.Hq = 8, c.Hkv = 2, c.rope = cfg;
    check_case<T, 128>(c, CausalMask{}, Entry::Dispatch);
    c.Sq = 3;  // decode
    check_case<T, 128>(c, CausalMask{}, Entry::Dispatch);
  }
  Case c;
  c.B = 1, c.Sq = 70, c.Sk = 50, c.Hq = 4, c.Hkv = 4, c.rope = &half, c.align = Alignment::TopLeft;
  check_case<T, 128>(c, CausalMask{}, Entry::Dispatch);
  Case v;
  v.Hq = 4, v.Hkv = 2, v.rope = &inter;
  v.seq_q = {30, 1, 65};
  v.seq_k = {30, 200, 65};
  check_case<T, 128>(v, CausalMask{}, Entry::Dispatch);
}
