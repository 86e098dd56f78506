// Every CUDA runtime call and every launch goes through these: a failure
// becomes attnkit::CudaError carrying cudaGetErrorString, never a silent
// wrong answer.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "attnkit/core/error.hpp"

namespace attnkit::cuda::detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear a sticky-free error so later calls start clean
    throw CudaError(attnkit::detail::concat("attnkit: CUDA error in ", what, ": ", cudaGetErrorString(e), " (",
                                            static_cast<int>(e), ")"));
  }
}

// After a <<<...>>> launch: configuration errors surface here; faults in the
// kernel surface at the next synchronising call (which is checked too).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

}  // namespace attnkit::cuda::detail
