// GGUF's groups of 32 inputs, shared by the integer matmuls and the 4-bit blocks' dequantize: the group
// size, and the check of a 4-bit weight's per-group scales and minima.
#pragma once

#include "common.h"

namespace pyinfer {

constexpr int64_t kGroup = 32;

inline void check_block_scales(const at::Tensor& d, const at::Tensor& m, int64_t n, int64_t k) {
  for (const at::Tensor* t : {&d, &m})
    TORCH_CHECK(k % kGroup == 0 && t->scalar_type() == at::kHalf && t->is_contiguous() && t->dim() == 2 &&
                t->size(0) == n && t->size(1) == k / kGroup, "d and m must be contiguous fp16 [N, K / 32]");
}

}  // namespace pyinfer
