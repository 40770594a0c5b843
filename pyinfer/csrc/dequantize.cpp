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
  parallel_chunks(0, n / 64 * (k / 32), 1, [&](int64_t begin, int64_t end) {
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

namespace {

// One panel's group (16 rows x 32 inputs) of 4-bit codes to dst rows (stride k): code * d + m.
// A step's 64 bytes hold 4 inputs of each of the 16 rows; they are widened 4 rows (16 values) at a time
// with AVX-512 (2 rows with AVX2, fp32 only: such CPUs have no bf16 GEMM) and stored as each row's 4 values.
template <typename scalar_t>
void dequantize_panel_group(const uint8_t* codes, const at::Half* d, const at::Half* m, int64_t rows, scalar_t* dst,
                            int64_t k) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  constexpr bool simd = std::is_same_v<scalar_t, float>
#if defined(__AVX512BF16__)
      || std::is_same_v<scalar_t, c10::BFloat16>
#endif
      ;
  if constexpr (simd) {
    if (rows == kPanel) {
      const __m512 d16 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d)));
      const __m512 m16 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m)));
      __m512 dq[4], mq[4];  // rows 4c .. 4c + 3's scale and minimum, each over its 4 lanes
      for (int c = 0; c < 4; ++c) {
        const __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32(4 * c), _mm512_srli_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 2));
        dq[c] = _mm512_permutexvar_ps(lanes, d16);
        mq[c] = _mm512_permutexvar_ps(lanes, m16);
      }
      for (int64_t j = 0; j < 4; ++j) {
        const __m512i run = _mm512_loadu_si512(codes + j * 64);
        const __m512i low = _mm512_set1_epi8(0x0F);
        const __m512i steps[2] = {_mm512_and_si512(run, low), _mm512_and_si512(_mm512_srli_epi16(run, 4), low)};
        for (int64_t half = 0; half < 2; ++half) {  // steps j (inputs 4j ..) and j + 4 (inputs 16 + 4j ..)
          const int64_t column = half * 16 + 4 * j;
          for (int c = 0; c < 4; ++c) {
            const __m128i bytes = _mm512_extracti32x4_epi32(steps[half], c);
            const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), dq[c], mq[c]);
            if constexpr (std::is_same_v<scalar_t, float>) {
              _mm_storeu_ps(dst + (4 * c) * k + column, _mm512_extractf32x4_ps(v, 0));
              _mm_storeu_ps(dst + (4 * c + 1) * k + column, _mm512_extractf32x4_ps(v, 1));
              _mm_storeu_ps(dst + (4 * c + 2) * k + column, _mm512_extractf32x4_ps(v, 2));
              _mm_storeu_ps(dst + (4 * c + 3) * k + column, _mm512_extractf32x4_ps(v, 3));
            } else {
#if defined(__AVX512BF16__)
              const auto narrow = (__m256i)_mm512_cvtneps_pbh(v);  // rounded to nearest even, as from_float
              const int64_t fours[4] = {_mm256_extract_epi64(narrow, 0), _mm256_extract_epi64(narrow, 1),
                                        _mm256_extract_epi64(narrow, 2), _mm256_extract_epi64(narrow, 3)};
              for (int r = 0; r < 4; ++r) std::memcpy(dst + (4 * c + r) * k + column, &fours[r], sizeof(fours[r]));
#endif
            }
          }
        }
      }
      return;
    }
  }
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (rows == kPanel) {
      for (int64_t pair = 0; pair < kPanel / 2; ++pair) {  // rows 2 pair and 2 pair + 1, 4 lanes each
        const int64_t r = 2 * pair;
        const __m256 dp = _mm256_set_m128(_mm_set1_ps(to_float(d[r + 1])), _mm_set1_ps(to_float(d[r])));
        const __m256 mp = _mm256_set_m128(_mm_set1_ps(to_float(m[r + 1])), _mm_set1_ps(to_float(m[r])));
        for (int64_t j = 0; j < 4; ++j) {
          const __m128i both = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j * 64 + r * 4));
          const __m128i steps[2] = {_mm_and_si128(both, _mm_set1_epi8(0x0F)),
                                    _mm_and_si128(_mm_srli_epi16(both, 4), _mm_set1_epi8(0x0F))};
          for (int64_t half = 0; half < 2; ++half) {
            const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(steps[half])), dp, mp);
            _mm_storeu_ps(dst + r * k + half * 16 + 4 * j, _mm256_castps256_ps128(v));
            _mm_storeu_ps(dst + (r + 1) * k + half * 16 + 4 * j, _mm256_extractf128_ps(v, 1));
          }
        }
      }
      return;
    }
  }
#endif
  for (int64_t row = 0; row < rows; ++row) {
    const float dg = to_float(d[row]), mg = to_float(m[row]);
    for (int64_t i = 0; i < kGroup; ++i)
      dst[row * k + i] = from_float<scalar_t>(static_cast<float>((codes[int4_byte(row, i)] >> int4_shift(i)) & 15) * dg + mg);
  }
}

}  // namespace

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
    parallel_chunks(0, panels_of(n) * groups, 16, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t p = task / groups, g = task % groups;
        dequantize_panel_group(w + task * kInt4GroupBytes, dp + task * kPanel, mp + task * kPanel,
                               std::min(kPanel, n - p * kPanel), o + p * kPanel * k + g * kGroup, k);
      }
    });
  });
  return out;
}

}  // namespace pyinfer
