// Host cost of the pieces of a decode call that are not the kernel (bench/cuda/NOTES-decode.md,
// Session 10): the placement check through the runtime and through the driver, and launches
// of a decode-shaped kernel (128 CTAs, 197 KB smem, 1.1 KB parameters) through <<<>>>,
// cudaLaunchKernelEx (with and without the PDL attribute) and the driver's cuLaunchKernel(Ex).
// Host clock, medians. Not part of the CMake build:
//   nvcc -O2 -std=c++17 -arch=sm_90a -I ../../../include -o host_probe host_probe.cu && ./host_probe
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <attnkit/cuda/driver.cuh>
#include <chrono>
#include <cstdio>
#include <vector>

struct Big {
  char b[1100];
};
__global__ void empty() {}
__global__ void fat(const __grid_constant__ Big p) {
  if (p.b[threadIdx.x] == 123) asm volatile("trap;");
}
template <class F>
double median_ns(F&& f, int n = 1000) {
  for (int i = 0; i < 100; ++i) f();
  cudaDeviceSynchronize();
  std::vector<double> t;
  for (int i = 0; i < n; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count());
    if (i % 64 == 63) cudaDeviceSynchronize();  // keep the launch queue short
  }
  cudaDeviceSynchronize();
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
int main() {
  using attnkit::cuda::detail::driver_function;
  const auto get_attr = driver_function<decltype(&cuPointerGetAttribute)>("cuPointerGetAttribute");
  const auto launch = driver_function<decltype(&cuLaunchKernel)>("cuLaunchKernel");
  const auto launch_ex = driver_function<decltype(&cuLaunchKernelEx)>("cuLaunchKernelEx");
  void* d[4];
  for (auto& p : d) cudaMalloc(&p, 1 << 20);
  auto rt = [&](void* p) {
    cudaPointerAttributes a{};
    cudaPointerGetAttributes(&a, p);
    return static_cast<int>(a.type);
  };
  auto drv = [&](void* p) {
    unsigned t = 0;
    return get_attr(&t, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, reinterpret_cast<CUdeviceptr>(p)) == CUDA_SUCCESS ? int(t)
                                                                                                            : -1;
  };
  cudaFunction_t fe, ff;
  cudaGetFuncBySymbol(&fe, reinterpret_cast<const void*>(empty));
  cudaGetFuncBySymbol(&ff, reinterpret_cast<const void*>(fat));
  cudaFuncSetAttribute(fat, cudaFuncAttributeMaxDynamicSharedMemorySize, 202080);
  Big big{};
  void* args[1] = {&big};
  for (int r = 0; r < 2; ++r) {
    std::printf("4x cudaPointerGetAttributes:     %.0f ns\n", median_ns([&] {
                  for (auto p : d) rt(p);
                }));
    std::printf("4x cuPointerGetAttribute (type): %.0f ns\n", median_ns([&] {
                  for (auto p : d) drv(p);
                }));
    std::printf("empty <<<1, 32>>>:               %.0f ns\n", median_ns([&] { empty<<<1, 32>>>(); }));
    std::printf("empty cuLaunchKernel:            %.0f ns\n", median_ns([&] {
                  launch(reinterpret_cast<CUfunction>(fe), 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr);
                }));
    std::printf("decode-shaped <<<>>>:            %.0f ns\n",
                median_ns([&] { fat<<<dim3(16, 8), 128, 202080>>>(big); }));
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t c{};
    c.gridDim = dim3(16, 8), c.blockDim = dim3(128), c.dynamicSmemBytes = 202080, c.attrs = at, c.numAttrs = 1;
    std::printf("decode-shaped LaunchKernelEx PDL: %.0f ns\n", median_ns([&] { cudaLaunchKernelEx(&c, fat, big); }));
    c.numAttrs = 0;
    std::printf("decode-shaped LaunchKernelEx:     %.0f ns\n", median_ns([&] { cudaLaunchKernelEx(&c, fat, big); }));
    std::printf("decode-shaped cuLaunchKernel:     %.0f ns\n", median_ns([&] {
                  launch(reinterpret_cast<CUfunction>(ff), 16, 8, 1, 128, 1, 1, 202080, nullptr, args, nullptr);
                }));
    CUlaunchAttribute da[1];
    da[0].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    da[0].value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig dc{};
    dc.gridDimX = 16, dc.gridDimY = 8, dc.gridDimZ = 1, dc.blockDimX = 128, dc.blockDimY = 1, dc.blockDimZ = 1;
    dc.sharedMemBytes = 202080, dc.hStream = nullptr, dc.attrs = da, dc.numAttrs = 1;
    std::printf("decode-shaped cuLaunchKernelEx PDL: %.0f ns\n",
                median_ns([&] { launch_ex(&dc, reinterpret_cast<CUfunction>(ff), args, nullptr); }));
  }
  std::printf("final: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
}
