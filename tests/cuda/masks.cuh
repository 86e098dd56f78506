// Mask fixtures for the GPU tests: each mask with host-side data for the
// reference and the same mask over device copies for the kernel.
#pragma once

#include <algorithm>
#include <memory>
#include <random>

#include "cuda_harness.cuh"

namespace attnkit_cuda_test {

// A head-dependent predicate with no tile hint: exercises per-element masking
// with per-row heads (GQA packing in decode).
struct StripesMask {
  ATTNKIT_HDI bool operator()(int64_t, int64_t h, int64_t i, int64_t j) const { return (i * 7 + j * 3 + h) % 5 != 0; }
};

// Sorted random document ids for B sequences of Sk keys (3-6 documents each).
struct DocIds {
  std::vector<int32_t> host;
  std::unique_ptr<DevBuf<int32_t>> dev;
  DocIds(int64_t B, int64_t Sk, std::mt19937_64& rng) {
    for (int64_t b = 0; b < B; ++b) {
      const int docs = 3 + static_cast<int>(rng() % 4);
      std::vector<int64_t> cuts;
      for (int d = 1; d < docs; ++d) cuts.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(Sk + 1)));
      std::sort(cuts.begin(), cuts.end());
      for (int64_t j = 0; j < Sk; ++j)
        host.push_back(static_cast<int32_t>(std::upper_bound(cuts.begin(), cuts.end(), j) - cuts.begin()));
    }
    dev = std::make_unique<DevBuf<int32_t>>(host);
  }
};

// A random block map (about half the cells on).
struct BlockMap {
  std::vector<uint8_t> host;
  std::unique_ptr<DevBuf<uint8_t>> dev;
  int64_t rows, cols;
  BlockMap(int64_t Sq, int64_t Sk, int64_t bq, int64_t bk, std::mt19937_64& rng)
      : rows((Sq + bq - 1) / bq), cols((Sk + bk - 1) / bk) {
    for (int64_t n = 0; n < rows * cols; ++n) host.push_back(static_cast<uint8_t>(rng() % 2));
    dev = std::make_unique<DevBuf<uint8_t>>(host);
  }
};

}  // namespace attnkit_cuda_test
