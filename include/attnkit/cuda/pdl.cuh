// Programmatic dependent launch (sm_90+): a kernel launched with it may start
// while the kernel before it on the stream is still finishing, so its launch
// latency and the part of its prologue that touches no global memory overlap
// the previous kernel's tail. Both halves live here:
//  * device: wait_for_prior_grids() before the kernel's first global memory
//    access (it returns once every prior grid has completed and its writes
//    are visible; at once when the launch had no such dependency), and
//    allow_dependent_launch() where the kernel no longer needs its SMs for
//    long (the next kernel's CTAs may then take the SMs this grid frees);
//  * host: a launch configuration that asks for it where the device has it.
// Used by flash_decode_kernel, where a decode step's per-call launch cost is
// a visible share of the call (bench/cuda/NOTES-decode.md, Session 8).
#pragma once

#include <cuda_runtime.h>

namespace attnkit::cuda::detail {

__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Launch configuration with the programmatic stream serialization attribute
// when `enable` (the caller checks the device: compute capability 9.0+).
struct PdlLaunch {
  cudaLaunchAttribute attr[1] = {};
  cudaLaunchConfig_t config = {};
  PdlLaunch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool enable) {
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attr;
    config.numAttrs = enable ? 1 : 0;
  }
  PdlLaunch(const PdlLaunch&) = delete;  // config.attrs points into this object
  PdlLaunch& operator=(const PdlLaunch&) = delete;
};

}  // namespace attnkit::cuda::detail
