// Converters between the window conventions of other libraries, which differ
// by one and have bitten several ports (DESIGN §9).
#pragma once

#include <utility>

#include "attnkit/core/error.hpp"
#include "attnkit/mask/basic.hpp"
#include "attnkit/mask/window.hpp"

namespace attnkit {

// Hugging Face / Mistral `sliding_window = W`: W keys including the query.
inline SlidingWindowMask from_hf_sliding_window(int64_t W) {
  detail::require(W >= 1, "sliding_window", W, "must be >= 1 (number of keys including the query itself)");
  return SlidingWindowMask(W);
}

// FlashAttention window_size = (left, right); -1 means unbounded on that side.
// (W-1, 0) is the Mistral window W; (-1, 0) is causal; (-1, -1) is full.
inline LocalMask from_flash_window(int64_t left, int64_t right) {
  detail::require(left >= -1, "window_size.left", left, "must be >= -1 (-1 = unbounded)");
  detail::require(right >= -1, "window_size.right", right, "must be >= -1 (-1 = unbounded)");
  return LocalMask(left, right);
}

// The FlashAttention window_size of a Mistral-style sliding window.
inline std::pair<int64_t, int64_t> to_flash_window(const SlidingWindowMask& m) { return {m.window - 1, 0}; }

// The Mistral `sliding_window` of a FlashAttention (left, 0) window.
inline int64_t to_hf_sliding_window(const LocalMask& m) {
  if (m.right != 0 || m.left < 0)
    detail::fail_arg("window_size", detail::concat("(", m.left, ", ", m.right, ")"),
                     "must be (left >= 0, 0) to be a Mistral sliding window");
  return m.left + 1;
}

}  // namespace attnkit
