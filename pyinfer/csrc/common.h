// Helpers every kernel file shares: the includes, and float conversions that round where PyTorch does.
#pragma once

// ATen's parts that the kernels use, not all of ATen/ATen.h (or torch/extension.h, which bindings.cpp
// alone includes): each file compiles in a few seconds less.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "work_pool.h"

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pyinfer {

inline float to_float(float x) { return x; }
inline float to_float(c10::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
inline float to_float(c10::Half x) {
#if defined(__F16C__)
  return _cvtsh_ss(x.x);
#else
  return static_cast<float>(x);
#endif
}

// float -> scalar_t, round to nearest even; the BFloat16 one in plain integer ops so that loops vectorize
// (a NaN stays a NaN: rounding its bits could carry it into infinity).
template <typename scalar_t>
inline scalar_t from_float(float x) { return static_cast<scalar_t>(x); }
template <>
inline c10::BFloat16 from_float<c10::BFloat16>(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  c10::BFloat16 out;
  out.x = static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  return out;
}

}  // namespace pyinfer
