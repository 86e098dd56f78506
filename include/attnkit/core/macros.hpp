// Host/device annotations so the same mask, RoPE and parameter code compiles
// under both g++ and nvcc.
#pragma once

#if defined(__CUDACC__)
#define ATTNKIT_HD __host__ __device__
#define ATTNKIT_FORCEINLINE __forceinline__
#else
#define ATTNKIT_HD
#if defined(__GNUC__) || defined(__clang__)
#define ATTNKIT_FORCEINLINE inline __attribute__((always_inline))
#else
#define ATTNKIT_FORCEINLINE inline
#endif
#endif

#define ATTNKIT_HDI ATTNKIT_HD ATTNKIT_FORCEINLINE

#define ATTNKIT_VERSION_MAJOR 0
#define ATTNKIT_VERSION_MINOR 1
#define ATTNKIT_VERSION_PATCH 0
