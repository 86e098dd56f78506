// Every mask of DESIGN §3, their composition, converters and dense builders.
#pragma once

#include "attnkit/mask/basic.hpp"
#include "attnkit/mask/block_sparse.hpp"
#include "attnkit/mask/compose.hpp"
#include "attnkit/mask/convert.hpp"
#include "attnkit/mask/custom.hpp"
#include "attnkit/mask/dense.hpp"
#include "attnkit/mask/document.hpp"
#include "attnkit/mask/prefix_lm.hpp"
#include "attnkit/mask/tile.hpp"
#include "attnkit/mask/traits.hpp"
#include "attnkit/mask/validate.hpp"
#include "attnkit/mask/window.hpp"
