// MoBA (mixture of block attention, DESIGN §5): what a caller chooses.
#pragma once

#include <cstdint>

#include "attnkit/core/error.hpp"
#include "attnkit/core/macros.hpp"

namespace attnkit {

// Keys are cut into blocks of `block_size` keys; a query at position p owns
// block p / block_size (always taken, causal inside) and adds the best
// `top_k - 1` fully-past blocks by its gate score q . mean(k over block).
// `top_k` counts the own block: top_k = 1 is "own block only" (a blockwise
// local window); top_k >= number of blocks is full causal attention.
// A POD, so the same value can be copied to a device.
struct MobaConfig {
  int64_t block_size = 512;
  int64_t top_k = 3;
};

namespace detail {
inline void validate_moba_config(const MobaConfig& c) {
  require(c.block_size >= 1, "moba block_size", c.block_size, "must be >= 1");
  require(c.top_k >= 1, "moba top_k", c.top_k, "must be >= 1 (it counts the query's own block)");
}
}  // namespace detail

}  // namespace attnkit
