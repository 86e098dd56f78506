// OpenMP when the consumer compiles with it, serial otherwise. Work items are
// independent and each is computed in a fixed order, so results are
// bit-identical whatever the thread count.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace attnkit {
namespace cpu {

inline int resolve_threads(int requested) {
#if defined(_OPENMP)
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// Calls body(item, worker_state) for item in [0, n), dynamically scheduled;
// each thread builds one State (its scratch) and reuses it.
template <class State, class Body>
void parallel_for(int64_t n, int threads, Body&& body) {
#if defined(_OPENMP)
  if (threads > 1 && n > 1) {
#pragma omp parallel num_threads(threads)
    {
      State state;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < n; ++item) body(item, state);
    }
    return;
  }
#else
  (void)threads;
#endif
  State state;
  for (int64_t item = 0; item < n; ++item) body(item, state);
}

}  // namespace cpu
}  // namespace attnkit
