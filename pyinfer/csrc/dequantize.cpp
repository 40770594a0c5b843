// Int4 weights back to dense matrices, for prefill-sized products (a float GEMM): torch's packed CPU int4
// layout (int4_unpack), and the 4-bit blocks of the integer matmuls (int4_blocks_dequantize).
#include "blocks.h"
#include "common.h"
#include "ops.h"

namespace pyinfer {
namespace {

// packed: a [N, K / 2] uint8 tensor in torch's AVX-512 CPU int4 layout, [N / 64, K, 32] bytes where byte
// j of column k holds w[j][k] in its low nibble and w[j + 32][k] in its high one (other builds lay it out
// differently: pyinfer/layers/quantization.py checks the layout once before using this);
// scales_and_zeros [K / group, N, 2]. Returns w [N, K] with w = (q - 8) * scale + zero.
template <typename scalar_t>
void int4_unpack_impl(const uint8_t* packed, const scalar_t* sz, int64_t n, int64_t k, int64_t group,
                      scalar_t* out) {
  // Tiles of 32 columns (inside one group, as group % 32 == 0): the tile's bytes are 1 KiB contiguous.
  at::parallel_for(0, n / 64 * (k / 32), 1, [&](int64_t begin, int64_t end) {
    alignas(64) uint8_t tile[32][32];  // [row pair j][column]
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / (k / 32), c0 = task % (k / 32) * 32;
      const uint8_t* src = packed + (block * k + c0) * 32;
      for (int64_t c = 0; c < 32; ++c)
        for (int64_t j = 0; j < 32; ++j) tile[j][c] = src[c * 32 + j];
      const scalar_t* g = sz + (c0 / group) * n * 2;
      for (int64_t j = 0; j < 32; ++j) {
        const int64_t row0 = block * 64 + j, row1 = row0 + 32;
        const float s0 = to_float(g[row0 * 2]), z0 = to_float(g[row0 * 2 + 1]) - 8.f * s0;
        const float s1 = to_float(g[row1 * 2]), z1 = to_float(g[row1 * 2 + 1]) - 8.f * s1;
        scalar_t* __restrict__ dst0 = out + row0 * k + c0;
        scalar_t* __restrict__ dst1 = out + row1 * k + c0;
        for (int64_t c = 0; c < 32; ++c) {
          dst0[c] = static_cast<scalar_t>(static_cast<float>(tile[j][c] & 15) * s0 + z0);
          dst1[c] = static_cast<scalar_t>(static_cast<float>(tile[j][c] >> 4) * s1 + z1);
        }
      }
    }
  });
}

}  // namespace

at::Tensor int4_unpack(const at::Tensor& packed, const at::Tensor& scales_and_zeros, int64_t group) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 2 && packed.is_contiguous(),
              "packed must be contiguous uint8 [N, K / 2]");
  TORCH_CHECK(scales_and_zeros.is_contiguous() && scales_and_zeros.dim() == 3, "scales_and_zeros [K / g, N, 2]");
  const int64_t n = packed.size(0), k = packed.size(1) * 2;
  TORCH_CHECK(n % 64 == 0 && k % group == 0 && group % 32 == 0,
              "N must be a multiple of 64, K of the group size, the group size of 32");
  TORCH_CHECK(scales_and_zeros.size(0) == k / group && scales_and_zeros.size(1) == n && scales_and_zeros.size(2) == 2,
              "scales_and_zeros must be [K / group, N, 2]");
  auto out = at::empty({n, k}, scales_and_zeros.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "int4_unpack", [&] {
    int4_unpack_impl<scalar_t>(packed.data_ptr<uint8_t>(), scales_and_zeros.data_ptr<scalar_t>(), n, k, group,
                               out.data_ptr<scalar_t>());
  });
  return out;
}

// The 4-bit blocks (in panels, blocks.h) back to a dense [n, K] matrix in `dtype` (fp32 or bf16), for
// prefill-sized products (a float GEMM; bf16 where the processor multiplies bf16 natively).
at::Tensor int4_blocks_dequantize(const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m, int64_t n,
                                  at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dequantize to float32 or bfloat16");
  const int64_t groups = codes.size(1), k = groups * kGroup;
  check_panels(codes, kInt4GroupBytes, {&d, &m}, n, k);
  auto out = at::empty({n, k}, d.options().dtype(dtype));
  const uint8_t* w = codes.data_ptr<uint8_t>();
  const at::Half *dp = d.data_ptr<at::Half>(), *mp = m.data_ptr<at::Half>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "int4_blocks_dequantize", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, panels_of(n) * groups, 16, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {  // one panel's group: 16 rows of 32 inputs
        const int64_t p = task / groups, g = task % groups;
        const uint8_t* src = w + task * kInt4GroupBytes;
        for (int64_t row = 0; row < std::min(kPanel, n - p * kPanel); ++row) {
          const float dg = to_float(dp[task * kPanel + row]), mg = to_float(mp[task * kPanel + row]);
          scalar_t* __restrict__ dst = o + (p * kPanel + row) * k + g * kGroup;
          for (int64_t i = 0; i < kGroup; ++i)
            dst[i] = from_float<scalar_t>(static_cast<float>((src[int4_byte(row, i)] >> int4_shift(i)) & 15) * dg + mg);
        }
      }
    });
  });
  return out;
}

}  // namespace pyinfer
