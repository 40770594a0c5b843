// Integer matmuls on 4-bit blocks and int8 rows (GGUF's Q4_1 and Q8_0) with activations
// quantized to int8: AVX2, or AVX-512 VNNI where present, else plain C++.
#include "blocks.h"
#include "common.h"
#include "ops.h"

namespace pyinfer {
namespace {

// ---- integer matmuls: y [T, N] = x [T, K] @ w^T, w as 4-bit blocks or int8 rows ----------------------
// x is quantized per group of 32 inputs to int8 (scale max|x| / 127), as llama.cpp does, so that each
// group's products are one integer dot product; the weights are never expanded to floats.

// With AVX-512 VNNI two groups (64 bytes) are one product whose 16 int32 lanes alternate between them:
// even lanes group g's, odd lanes group g + 1's, so that both sides' pair of scales is one 64-bit
// broadcast. Both sides lay the pair's bytes out so: 4 bytes of group g, 4 of g + 1, the next 4 of g ...
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define PYINFER_VNNI512 1
#endif

struct QuantizedActivations {
  std::vector<int8_t> q;    // [T, K]; with VNNI512 each pair of groups interleaved 4 bytes at a time
  std::vector<float> scale;  // [T, K / 32]
  std::vector<float> sum;    // [T, K / 32]: each group's float sum, for the 4-bit blocks' min term (else empty)
  std::vector<uint8_t> q_offset;  // [T, K] with VNNI512, for int8 weights: q + 128, the unsigned side of vpdpbusd
};

template <typename scalar_t>
QuantizedActivations quantize_activations(const at::Tensor& x, bool with_sums, bool with_offset) {
  const int64_t rows = x.size(0), k = x.size(1), groups = k / kGroup, stride = x.stride(0);
  QuantizedActivations a{std::vector<int8_t>(rows * k), std::vector<float>(rows * groups),
                         std::vector<float>(with_sums ? rows * groups : 0)};
#ifdef PYINFER_VNNI512
  if (with_offset) a.q_offset.resize(rows * k);
  const int64_t paired = groups - groups % 2;  // groups laid out in pairs; an odd last one stays as it is
#else
  (void)with_offset;
#endif
  const scalar_t* src = x.data_ptr<scalar_t>();
  at::parallel_for(0, rows * groups, 64, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / groups, g = task % groups;
      const scalar_t* in = src + r * stride + g * kGroup;
      float v[kGroup], top = 0.f, total = 0.f;
      for (int64_t i = 0; i < kGroup; ++i) {
        v[i] = to_float(in[i]);
        top = std::max(top, std::fabs(v[i]));
        total += v[i];
      }
      const float inv = top > 0.f ? 127.f / top : 0.f;
      for (int64_t i = 0; i < kGroup; ++i) {
        const auto code = static_cast<int8_t>(std::nearbyint(v[i] * inv));
        int64_t at = r * k + g * kGroup + i;
#ifdef PYINFER_VNNI512
        // within a pair, 4 bytes of group g, then 4 of g + 1, in turn: the two groups' bytes never meet
        if (g < paired) at = r * k + (g - g % 2) * kGroup + (2 * (i / 4) + g % 2) * 4 + i % 4;
        if (with_offset) a.q_offset[at] = static_cast<uint8_t>(code + 128);
#endif
        a.q[at] = code;
      }
      a.scale[task] = top / 127.f;
      if (with_sums) a.sum[task] = total;
    }
  });
  return a;
}

// Rows of activations handled together for one weight row: its bytes are loaded (and a 4-bit group
// unpacked) once for all of them, and each row's sum is its own chain of additions. AVX-512 has the
// 32 registers for 16 such sums; AVX2's 16 hold 4.
#ifdef PYINFER_VNNI512
constexpr int64_t kRowTile = 16;
#else
constexpr int64_t kRowTile = 4;
#endif

#if defined(__AVX2__) && defined(__FMA__)
inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// The 32 products of unsigned weight bytes and signed activations, as 8 partial int32 sums in float:
// one VNNI instruction where the processor has it (vpdpbusd, AVX-512 VNNI on 256-bit registers), else
// two (pairs summed to int16, then to int32; a pair stays within int16: |x| and |w| are at most 127).
inline __m256 dot_group(__m256i weights_u8, __m256i x_s8) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), weights_u8, x_s8));
#else
  const __m256i pairs = _mm256_maddubs_epi16(weights_u8, x_s8);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}
#endif

#ifdef PYINFER_VNNI512
// The sums of 16 vectors' lanes, lane r holding v[r]'s: pairs of vectors added halfway, level by level
// (45 shuffles and adds, where reducing each vector on its own takes about 130).
inline __m512 sums_of_16(const __m512* v) {
  __m512 halves[8], quarters[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3]
    halves[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: that lane's sums of rows 4i .. 4i + 3
    const __m512d a = _mm512_castps_pd(halves[2 * i]), b = _mm512_castps_pd(halves[2 * i + 1]);
    quarters[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  __m512 pairs[2];
  for (int i = 0; i < 2; ++i)  // [rows 8i.. lanes 0 + 1, lanes 2 + 3, rows 8i + 4.. lanes 0 + 1, lanes 2 + 3]
    pairs[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quarters[2 * i], quarters[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(quarters[2 * i], quarters[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(pairs[0], pairs[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(pairs[0], pairs[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Two float group scales (a pair's: g, g + 1) in alternate lanes, as a pair's products lie.
inline __m512 pair_scales(const float* s) {
  double both;
  std::memcpy(&both, s, sizeof(both));
  return _mm512_castpd_ps(_mm512_set1_pd(both));
}
// The same from two fp16 scales.
inline __m512 fp16_pair_scales(const at::Half* d) {
  int32_t two;
  std::memcpy(&two, d, sizeof(two));
  const __m128 both = _mm_cvtph_ps(_mm_cvtsi32_si128(two));
  return _mm512_castpd_ps(_mm512_broadcastsd_pd(_mm_castps_pd(both)));
}
#endif

#ifdef PYINFER_VNNI512
// Two groups of one weight row, ready for any number of activation rows: the 64 bytes vpdpbusd reads,
// where its sums start, and the groups' scales (8 lanes each).
struct PairWeights {
  __m512i bytes, base;
  __m512 scale;
};
#endif

// One weight row as the integer dot products read it, group by group: w = q * scale(g) (+ minimum(g)
// for the 4-bit blocks). `exact_dot` is the plain C++ product of a group with int8
// activations; with AVX2, `load` and `simd_dot` are the same product, 8 lanes at a time.
struct Int4Row {  // 4-bit blocks: byte i of a group holds q[i] in its low nibble, q[i + 16] in its high one
  static constexpr bool has_min = true;
  static constexpr bool offset_input = false;  // unsigned codes against signed activations
  const uint8_t* w;
  const at::Half *d, *m;
  float scale(int64_t g) const { return to_float(d[g]); }
  float minimum(int64_t g) const { return to_float(m[g]); }
  int32_t exact_dot(int64_t g, const int8_t* x) const {
    int32_t dot = 0;
    for (int64_t i = 0; i < 16; ++i) dot += (w[g * 16 + i] & 15) * x[i] + (w[g * 16 + i] >> 4) * x[i + 16];
    return dot;
  }
#if defined(__AVX2__) && defined(__FMA__)
  __m256i load(int64_t g) const {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + g * 16));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
  }
  static __m256 simd_dot(__m256i codes, __m256i x) { return dot_group(codes, x); }
#endif
#ifdef PYINFER_VNNI512
  // Groups g and g + 1 as 64 codes in the activations' order: unpacked to [g's codes 0-15 | g + 1's
  // 0-15 | g's 16-31 | g + 1's 16-31], then 4 bytes of each in turn.
  PairWeights load_pair(int64_t g) const {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * 16));
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m512i lo_hi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(raw, mask)),
                                             _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), 1);
    const __m512i order = _mm512_set_epi32(15, 11, 14, 10, 13, 9, 12, 8, 7, 3, 6, 2, 5, 1, 4, 0);
    return {_mm512_permutexvar_epi32(order, lo_hi), _mm512_setzero_si512(), fp16_pair_scales(d + g)};
  }
  static const int8_t* pair_input(const QuantizedActivations& a) { return a.q.data(); }
  static __m512i pair_dot(const PairWeights& w, __m512i x) { return _mm512_dpbusd_epi32(w.base, w.bytes, x); }
  __m512 minimums16(int64_t g, __mmask16 lanes) const {  // the minima of groups g .. g + 15 (those in `lanes`)
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(lanes, m + g));
  }
#endif
};

struct Int8Row {  // int8 weights with one fp16 scale per group of 32 (GGUF's Q8_0)
  static constexpr bool has_min = false;
  static constexpr bool offset_input = true;  // signed weights against activations + 128 (VNNI512)
  const int8_t* w;
  const at::Half* d;
  float scale(int64_t g) const { return to_float(d[g]); }
  float minimum(int64_t) const { return 0.f; }
  int32_t exact_dot(int64_t g, const int8_t* x) const {
    int32_t dot = 0;
    for (int64_t i = 0; i < kGroup; ++i) dot += w[g * kGroup + i] * x[i];
    return dot;
  }
#if defined(__AVX2__) && defined(__FMA__)
  __m256i load(int64_t g) const { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * kGroup)); }
  // the products want one unsigned side: |x| against w with x's sign
  static __m256 simd_dot(__m256i w, __m256i x) { return dot_group(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x)); }
#endif
#ifdef PYINFER_VNNI512
  // The activations' side is unsigned, x + 128: the products start from -128 * (each lane's sum of w).
  PairWeights load_pair(int64_t g) const {  // 4 bytes of group g, then 4 of g + 1, in turn
    const __m512i order = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i bytes = _mm512_permutexvar_epi32(order, _mm512_loadu_si512(w + g * kGroup));
    const __m512i offsets = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), bytes);
    return {bytes, _mm512_sub_epi32(_mm512_setzero_si512(), offsets), fp16_pair_scales(d + g)};
  }
  static const uint8_t* pair_input(const QuantizedActivations& a) { return a.q_offset.data(); }
  static __m512i pair_dot(const PairWeights& w, __m512i x) { return _mm512_dpbusd_epi32(w.base, x, w.bytes); }
#endif
};

// One weight row against `tile` activation rows starting at t0: out[r] = its dot product with row t0 + r.
template <int64_t tile, typename Row>
void row_dots(const Row& w, const QuantizedActivations& a, int64_t t0, int64_t k, float* out) {
  const int64_t groups = k / kGroup;
#ifdef PYINFER_VNNI512
  const int64_t pairs = groups / 2;
  const auto* input = Row::pair_input(a);
  __m512 acc[tile];
  for (int64_t r = 0; r < tile; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const PairWeights weights = w.load_pair(2 * p);
    for (int64_t r = 0; r < tile; ++r) {
      const int64_t row = t0 + r;
      const __m512i x = _mm512_loadu_si512(input + row * k + 2 * p * kGroup);
      const __m512 x_scale = pair_scales(a.scale.data() + row * groups + 2 * p);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(Row::pair_dot(weights, x)), _mm512_mul_ps(weights.scale, x_scale),
                               acc[r]);
    }
  }
  if constexpr (Row::has_min)  // the minima's term, summed in the same lanes
    for (int64_t g = 0; g < groups; g += 16) {
      const __mmask16 lanes = groups - g >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (groups - g)) - 1);
      const __m512 minimums = w.minimums16(g, lanes);
      for (int64_t r = 0; r < tile; ++r)
        acc[r] = _mm512_fmadd_ps(minimums, _mm512_maskz_loadu_ps(lanes, a.sum.data() + (t0 + r) * groups + g), acc[r]);
    }
  if constexpr (tile == 16) {
    _mm512_storeu_ps(out, sums_of_16(acc));
  } else {
    for (int64_t r = 0; r < tile; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
  }
  for (int64_t r = 0; r < tile; ++r) {
    const int64_t row = t0 + r;
    if (groups % 2) {  // the last group alone
      const int64_t g = groups - 1;
      out[r] += w.scale(g) * a.scale[row * groups + g] * static_cast<float>(w.exact_dot(g, a.q.data() + row * k + g * kGroup));
    }
  }
#elif defined(__AVX2__) && defined(__FMA__)
  float mins[tile] = {};
  __m256 acc[tile];
  for (int64_t r = 0; r < tile; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i weights = w.load(g);
    const float scale = w.scale(g), minimum = w.minimum(g);
    for (int64_t r = 0; r < tile; ++r) {
      const int64_t row = t0 + r;
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + row * k + g * kGroup));
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale * a.scale[row * groups + g]), Row::simd_dot(weights, x), acc[r]);
      if constexpr (Row::has_min) mins[r] += minimum * a.sum[row * groups + g];
    }
  }
  for (int64_t r = 0; r < tile; ++r) out[r] = horizontal_sum(acc[r]) + mins[r];
#else
  float mins[tile] = {};
  for (int64_t r = 0; r < tile; ++r) {
    const int64_t row = t0 + r;
    float total = 0.f;
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* x = a.q.data() + row * k + g * kGroup;
      total += w.scale(g) * a.scale[row * groups + g] * static_cast<float>(w.exact_dot(g, x));
      if constexpr (Row::has_min) mins[r] += w.minimum(g) * a.sum[row * groups + g];
    }
    out[r] = total + mins[r];
  }
#endif
}

// Weight row j against activation rows t, t + 1, ... in tiles while a whole one remains: writes column
// j of y [T, n] and returns the first row left.
template <int64_t tile, typename Row, typename scalar_t>
int64_t tiles_of(const Row& w, const QuantizedActivations& a, int64_t k, int64_t n, int64_t j, int64_t t,
                 int64_t rows, scalar_t* y, float* dots) {
  for (; t + tile <= rows; t += tile) {
    row_dots<tile>(w, a, t, k, dots);
    for (int64_t r = 0; r < tile; ++r) y[(t + r) * n + j] = from_float<scalar_t>(dots[r]);
  }
  return t;
}

// x [T, K] against every weight row `row_of(j)`, j < n; the weight rows are split across threads.
template <typename scalar_t, typename RowOf>
at::Tensor integer_matmul(const at::Tensor& x, int64_t n, RowOf row_of) {
  using Row = decltype(row_of(int64_t{0}));
  const int64_t rows = x.size(0), k = x.size(1);
  const auto a = quantize_activations<scalar_t>(x, Row::has_min, Row::offset_input);
  auto out = at::empty({rows, n}, x.options());
  scalar_t* y = out.data_ptr<scalar_t>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    float dots[kRowTile];
    for (int64_t j = begin; j < end; ++j) {
      const Row w = row_of(j);
      // whole tiles, then tiles of 4 (where the tile is larger), then single rows
      int64_t t = tiles_of<kRowTile>(w, a, k, n, j, 0, rows, y, dots);
      if constexpr (kRowTile > 4) t = tiles_of<4>(w, a, k, n, j, t, rows, y, dots);
      tiles_of<1>(w, a, k, n, j, t, rows, y, dots);
    }
  });
  return out;
}

void check_activations(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [T, K] rows with unit column stride");
  TORCH_CHECK(x.size(1) == k && k % kGroup == 0, "x has ", x.size(1), " inputs, the weights ", k,
              " (a multiple of 32)");
}

}  // namespace

// x [T, K] @ w^T for w [N, K] as 4-bit blocks: codes [N, K / 2] uint8, d and m [N, K / 32] fp16 (GGUF's
// own precision: 20 bytes per 32 weights, as in the file).
at::Tensor int4_blocks_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m) {
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 2 && codes.is_contiguous(),
              "codes must be contiguous uint8 [N, K / 2]");
  const int64_t n = codes.size(0), k = codes.size(1) * 2;
  check_activations(x, k);
  check_block_scales(d, m, n, k);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "int4_blocks_mm", [&] {
    const uint8_t* w = codes.data_ptr<uint8_t>();
    const at::Half *dp = d.data_ptr<at::Half>(), *mp = m.data_ptr<at::Half>();
    const int64_t groups = k / kGroup;
    out = integer_matmul<scalar_t>(
        x, n, [&](int64_t j) { return Int4Row{w + j * k / 2, dp + j * groups, mp + j * groups}; });
  });
  return out;
}

// x [T, K] @ w^T for w [N, K] = q * d per group of 32 inputs: q int8 [N, K], d fp16 [N, K / 32] (GGUF's Q8_0).
at::Tensor int8_blocks_mm(const at::Tensor& x, const at::Tensor& q, const at::Tensor& d) {
  TORCH_CHECK(q.scalar_type() == at::kChar && q.dim() == 2 && q.is_contiguous(), "q must be contiguous int8 [N, K]");
  const int64_t n = q.size(0), k = q.size(1), groups = k / kGroup;
  check_activations(x, k);
  TORCH_CHECK(d.scalar_type() == at::kHalf && d.is_contiguous() && d.dim() == 2 && d.size(0) == n &&
              d.size(1) == groups, "d must be contiguous fp16 [N, K / 32]");
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "int8_blocks_mm", [&] {
    const int8_t* w = q.data_ptr<int8_t>();
    const at::Half* dp = d.data_ptr<at::Half>();
    out = integer_matmul<scalar_t>(x, n, [&](int64_t j) { return Int8Row{w + j * k, dp + j * groups}; });
  });
  return out;
}

}  // namespace pyinfer
