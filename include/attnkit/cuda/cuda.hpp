// Everything CUDA-side of attnkit, for translation units compiled by nvcc.
#pragma once

#include "attnkit/cuda/dispatch.cuh"
