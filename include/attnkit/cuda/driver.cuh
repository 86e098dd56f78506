// Driver API functions reached through the runtime's driver entry point, so
// attnkit never links against libcuda: the caller looks a function up once
// (a function-local static) and gets nullptr where the driver lacks it.
#pragma once

#include <cuda.h>  // the driver functions' signatures only
#include <cuda_runtime.h>

namespace attnkit::cuda::detail {

// The driver's function `name` (its CUDA 12.0 version) as type Fn, or nullptr.
template <class Fn>
Fn driver_function(const char* name) {
  void* f = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    cudaGetLastError();  // not sticky; clear it so a later launch check does not report it
    return nullptr;
  }
  return reinterpret_cast<Fn>(f);
}

}  // namespace attnkit::cuda::detail
