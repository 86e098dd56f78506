// attnkit: header-only attention kernels. Include this for everything that
// runs on the host; CUDA translation units add attnkit/cuda/cuda.hpp.
#pragma once

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/make_params.hpp"
#include "attnkit/core/options.hpp"
#include "attnkit/core/params.hpp"
#include "attnkit/core/sequence.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/mask/masks.hpp"
