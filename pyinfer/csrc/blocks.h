// GGUF's groups of 32 inputs, and the panel layout in which the integer matmuls (and the 4-bit
// blocks' dequantize) read block weights: both shared by integer_matmul.cpp and dequantize.cpp.
//
// The weight rows lie in panels of 16 (the last one padded with zero rows), each panel group by group,
// so that one 512-bit vector holds a step of 16 rows: 4 consecutive inputs of each row (row r's in
// bytes 4r .. 4r + 3). A group's 32 inputs are 8 steps:
// - 4-bit codes, [P, G, 256] uint8: 4 runs of 64 bytes; run j holds step j in its low nibbles and step
//   j + 4 in its high ones (inputs 4j .. 4j + 3, and 16 + 4j .. 16 + 4j + 3);
// - int8 codes, [P, G, 512] uint8: the 8 steps in turn, each code as w + 128 (vpdpbusd's unsigned side);
// - scales d (and the 4-bit blocks' minima m), [P, G, 16] fp16: the panel's 16 rows of group g.
// Pyinfer/layers/quantization.py packs them so.
#pragma once

#include "common.h"

namespace pyinfer {

constexpr int64_t kGroup = 32;
constexpr int64_t kPanel = 16;  // weight rows per panel
constexpr int64_t kInt4GroupBytes = kPanel * kGroup / 2, kInt8GroupBytes = kPanel * kGroup;

// Where input i of a group lies for row `row` of a 4-bit panel: the byte, then the nibble's shift.
inline int64_t int4_byte(int64_t row, int64_t i) { return (i / 4 % 4) * 64 + row * 4 + i % 4; }
inline int int4_shift(int64_t i) { return static_cast<int>(i / 16 * 4); }

inline int64_t panels_of(int64_t n) { return (n + kPanel - 1) / kPanel; }

// The checks of a panel-packed weight of n rows and k inputs: codes [P, G, group_bytes], scales
// (d, and m where given) [P, G, 16] fp16.
inline void check_panels(const at::Tensor& codes, int64_t group_bytes, std::initializer_list<const at::Tensor*> scales,
                         int64_t n, int64_t k) {
  TORCH_CHECK(k % kGroup == 0, "the inputs must be a multiple of 32, not ", k);
  const int64_t panels = panels_of(n), groups = k / kGroup;
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 3 &&
                  codes.size(0) == panels && codes.size(1) == groups && codes.size(2) == group_bytes,
              "codes must be contiguous uint8 [N / 16, K / 32, ", group_bytes, "] (N = ", n, ", K = ", k, ")");
  for (const at::Tensor* t : scales)
    TORCH_CHECK(t->scalar_type() == at::kHalf && t->is_contiguous() && t->dim() == 3 && t->size(0) == panels &&
                    t->size(1) == groups && t->size(2) == kPanel,
                "scales must be contiguous fp16 [N / 16, K / 32, 16]");
}

}  // namespace pyinfer
