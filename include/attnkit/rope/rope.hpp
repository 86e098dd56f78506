// Rotary position embeddings: every variant real models use (styles, partial
// rotary, linear/NTK/dynamic-NTK/YaRN/Llama-3.1 scaling), standalone apply_rope,
// and the shared host/device math the fused attention kernels call.
// Conventions and formulas: docs/rope.md.
#pragma once

#include "attnkit/rope/apply.hpp"        // apply_rope / apply_rope_varlen
#include "attnkit/rope/config.hpp"       // RopeConfig: what to compute
#include "attnkit/rope/frequencies.hpp"  // resolve() -> RopeParams, angles, RopeTable
#include "attnkit/rope/rotate.hpp"       // HD rotation, ReRoPE / Leaky ReRoPE branches
