// MoBA's selection rule written out in double precision, straight from
// DESIGN §5, for the CPU and GPU tests: the implementations score in fp32,
// so their lists may differ from it only at near ties.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include <attnkit/moba/config.hpp>
#include <attnkit/moba/selection.hpp>

#include "support/test_util.hpp"

namespace attnkit_test {

using attnkit::MobaConfig;

// Key rows of (b, kv head) as doubles, by a per-layout accessor.
struct Seq {
  int64_t lq, lk, off;  // p(i) = i + off
};

// Chosen blocks of one row, by the rule: own block c = p / Bs; candidates
// c' < c holding a key; top_k - 1 best of q . mean (ties: lower index).
// Also returns the scores, for the near-tie allowance below.
template <class QRow, class KRow>
std::vector<int32_t> brute_row(QRow qrow, KRow krow, int64_t D, const Seq& sq, int64_t i, const MobaConfig& cfg,
                               std::vector<double>* scores_out = nullptr) {
  const int64_t p = i + sq.off;
  if (p < 0) return {};
  const int64_t c = p / cfg.block_size;
  const int64_t kv_blocks = (sq.lk + cfg.block_size - 1) / cfg.block_size;
  const int64_t nc = std::min(c, kv_blocks);
  std::vector<double> score(static_cast<size_t>(nc));
  for (int64_t cb = 0; cb < nc; ++cb) {
    const int64_t j0 = cb * cfg.block_size, j1 = std::min(sq.lk, j0 + cfg.block_size);
    std::vector<double> mean(static_cast<size_t>(D), 0.0);
    for (int64_t j = j0; j < j1; ++j) {
      const double* kr = krow(j);
      for (int64_t d = 0; d < D; ++d) mean[static_cast<size_t>(d)] += kr[d];
    }
    const double* qr = qrow(i);
    double s = 0.0;
    for (int64_t d = 0; d < D; ++d) s += qr[d] * (mean[static_cast<size_t>(d)] / static_cast<double>(j1 - j0));
    score[static_cast<size_t>(cb)] = s;
  }
  std::vector<int32_t> order(static_cast<size_t>(nc));
  for (int64_t cb = 0; cb < nc; ++cb) order[static_cast<size_t>(cb)] = static_cast<int32_t>(cb);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  order.resize(static_cast<size_t>(std::min<int64_t>(nc, cfg.top_k - 1)));
  std::sort(order.begin(), order.end());
  order.push_back(static_cast<int32_t>(c));
  if (scores_out) *scores_out = score;
  return order;
}

// The implementation scores in fp32; where the two lists differ, every
// difference must be a near tie (within fp32 rounding of the dot product).
bool same_or_near_tie(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                      const std::vector<double>& score, double tol) {
  if (got == want) return true;
  if (got.size() != want.size() || got.empty() || got.back() != want.back()) return false;
  double worst_in = std::numeric_limits<double>::infinity(), best_out = -std::numeric_limits<double>::infinity();
  std::vector<char> in(score.size(), 0);
  for (size_t a = 0; a + 1 < got.size(); ++a) {
    if (got[a] < 0 || got[a] >= static_cast<int32_t>(score.size())) return false;
    in[static_cast<size_t>(got[a])] = 1;
    worst_in = std::min(worst_in, score[static_cast<size_t>(got[a])]);
  }
  for (size_t c = 0; c < score.size(); ++c)
    if (!in[c]) best_out = std::max(best_out, score[c]);
  return best_out <= worst_in + tol;
}

// Where one sequence's rows sit in contiguous [rows, heads, D] buffers.
struct SeqRows {
  int64_t q0, k0, lq, lk;
};

// Every row's chosen list equals the brute force's, or differs only at a near
// tie; near ties must be rare on random data.
template <class T>
void check_selection(const std::vector<T>& q, const std::vector<T>& k, int64_t Hq, int64_t Hkv, int64_t D,
                     const std::vector<SeqRows>& seqs, attnkit::Alignment align, const MobaConfig& cfg,
                     const attnkit::MobaSelection& sel) {
  int64_t exact = 0, near = 0;
  for (size_t b = 0; b < seqs.size(); ++b) {
    const SeqRows& r = seqs[b];
    const Seq sq{r.lq, r.lk, align == attnkit::Alignment::BottomRight ? r.lk - r.lq : 0};
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      std::vector<double> qd(static_cast<size_t>(D)), kd(static_cast<size_t>(D));
      auto qrow = [&](int64_t i) {
        for (int64_t d = 0; d < D; ++d) qd[d] = to_float(q[static_cast<size_t>(((r.q0 + i) * Hq + h) * D + d)]);
        return qd.data();
      };
      auto krow = [&](int64_t j) {
        for (int64_t d = 0; d < D; ++d) kd[d] = to_float(k[static_cast<size_t>(((r.k0 + j) * Hkv + hk) * D + d)]);
        return kd.data();
      };
      for (int64_t i = 0; i < r.lq; ++i) {
        std::vector<double> score;
        const std::vector<int32_t> want = brute_row(qrow, krow, D, sq, i, cfg, &score);
        const std::vector<int32_t> got = sel.chosen(static_cast<int64_t>(b), h, i);
        INFO("b " << b << " h " << h << " i " << i);
        if (got == want) {
          ++exact;
          continue;
        }
        ++near;
        REQUIRE(same_or_near_tie(got, want, score, 1e-5 * static_cast<double>(D)));
      }
    }
  }
  INFO("exact rows " << exact << ", near-tie rows " << near);
  CHECK(near <= exact / 100 + 1);
}

}  // namespace attnkit_test
