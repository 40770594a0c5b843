// Integer matmuls on 4-bit and int8 block weights (GGUF's Q4_1 and Q8_0) with activations quantized to
// int8: AVX-512 VNNI, AVX2, or plain C++.
#include "blocks.h"
#include "common.h"
#include "ops.h"

namespace pyinfer {
namespace {

// ---- y [T, N] = x [T, K] @ w^T, w in panels of 16 rows (blocks.h) -------------------------------------
// x is quantized per group of 32 inputs to int8 (scale max|x| / 127), as llama.cpp does, so that a group's
// products are integer dot products; the weights are never expanded to floats. A vector holds the 16
// rows of a panel: each step multiplies 4 inputs of one activation row (one broadcast) by the same 4
// inputs of all 16 weight rows, and a group's float work (its scales, its minima) comes once per 8 steps.

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define PYINFER_VNNI512 1
#endif

// What the weights' per-group term multiplies, per activation row and group.
enum class GroupSum {
  none,
  exact,      // x's own float sum (the 4-bit blocks' minimum term)
  quantized,  // the int8-rounded x's sum (the int8 codes' +128 offset, taken off again)
};

struct QuantizedActivations {
  std::vector<int8_t> q;     // [T, K]
  std::vector<float> scale;  // [T, K / 32]
  std::vector<float> sum;    // [T, K / 32], unless GroupSum::none
};

template <typename scalar_t>
QuantizedActivations quantize_activations(const at::Tensor& x, GroupSum sums) {
  const int64_t rows = x.size(0), k = x.size(1), groups = k / kGroup, stride = x.stride(0);
  QuantizedActivations a{std::vector<int8_t>(rows * k), std::vector<float>(rows * groups),
                         std::vector<float>(sums == GroupSum::none ? 0 : rows * groups)};
  const scalar_t* src = x.data_ptr<scalar_t>();
  parallel_chunks(0, rows * groups, 64, [&](int64_t begin, int64_t end) {
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
      int32_t codes = 0;
      for (int64_t i = 0; i < kGroup; ++i) {
        const auto code = static_cast<int8_t>(std::nearbyint(v[i] * inv));
        a.q[r * k + g * kGroup + i] = code;
        codes += code;
      }
      a.scale[task] = top / 127.f;
      if (sums == GroupSum::exact) a.sum[task] = total;
      if (sums == GroupSum::quantized) a.sum[task] = a.scale[task] * static_cast<float>(codes);
    }
  });
  return a;
}

// Activation rows taken together against one panel: its codes are unpacked once for all of them.
// AVX-512 has the 32 registers for 16 rows' sums beside a group's 8 steps; AVX2's 16 hold 4.
#ifdef PYINFER_VNNI512
constexpr int64_t kRowTile = 16;
#else
constexpr int64_t kRowTile = 4;
#endif

// Groups ahead whose bytes a panel's loop fetches: at a few activation rows the matmuls stream the
// weights from memory, faster than the hardware prefetchers alone bring them.
constexpr int64_t kPrefetchGroups = 8;

// One panel of 4-bit blocks: w = code * d + m per group. `code` is the plain C++ reading of the layout;
// the SIMD loads read a whole step at a time.
struct Int4Panel {
  static constexpr GroupSum sums = GroupSum::exact;
  const uint8_t* codes;  // [G, 256]
  const at::Half *d, *m;  // [G, 16]
  int32_t code(int64_t g, int64_t row, int64_t i) const {
    return (codes[g * kInt4GroupBytes + int4_byte(row, i)] >> int4_shift(i)) & 15;
  }
  float scale(int64_t g, int64_t row) const { return to_float(d[g * kPanel + row]); }
  float minimum(int64_t g, int64_t row) const { return to_float(m[g * kPanel + row]); }
  void prefetch(int64_t g) const {  // a later group's codes, scales and minima (past the panel: the next one's)
    for (int64_t line = 0; line < kInt4GroupBytes; line += 64) __builtin_prefetch(codes + g * kInt4GroupBytes + line);
    __builtin_prefetch(d + g * kPanel);
    __builtin_prefetch(m + g * kPanel);
  }
#ifdef PYINFER_VNNI512
  void unpack(int64_t g, __m512i* steps) const {  // the 8 steps of group g, unsigned codes
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t j = 0; j < 4; ++j) {
      const __m512i run = _mm512_loadu_si512(codes + g * kInt4GroupBytes + j * 64);
      steps[j] = _mm512_and_si512(run, low);
      steps[j + 4] = _mm512_and_si512(_mm512_srli_epi16(run, 4), low);
    }
  }
  __m512 minima(int64_t g) const { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + g * kPanel))); }
#elif defined(__AVX2__) && defined(__FMA__)
  static constexpr bool has_min = true;
  __m256i step(int64_t g, int64_t s, int64_t half) const {  // 8 rows' 4 codes of step s
    const __m256i run = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + g * kInt4GroupBytes + s % 4 * 64 + half * 32));
    return _mm256_and_si256(s < 4 ? run : _mm256_srli_epi16(run, 4), _mm256_set1_epi8(0x0F));
  }
  // unsigned codes (at most 15) against signed x: a pair's sum stays well within int16
  static __m256i dot(__m256i sum, __m256i codes, __m256i x) {
    return _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), _mm256_set1_epi16(1)));
  }
  __m256 minima(int64_t g, int64_t half) const {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + g * kPanel + half * 8)));
  }
#else
  static constexpr bool has_min = true;
#endif
};

// One panel of int8 blocks: w = code * d per group, each code held as w + 128.
struct Int8Panel {
#ifdef PYINFER_VNNI512
  // vpdpbusd multiplies the unsigned w + 128 by x: the sums carry 128 * x's group sum, a minimum of -128 d
  static constexpr GroupSum sums = GroupSum::quantized;
#else
  static constexpr GroupSum sums = GroupSum::none;  // the products of w itself
  static constexpr bool has_min = false;
#endif
  const uint8_t* codes;  // [G, 512]
  const at::Half* d;     // [G, 16]
  int32_t code(int64_t g, int64_t row, int64_t i) const {
    return static_cast<int32_t>(codes[g * kInt8GroupBytes + i / 4 * 64 + row * 4 + i % 4]) - 128;
  }
  float scale(int64_t g, int64_t row) const { return to_float(d[g * kPanel + row]); }
  float minimum(int64_t, int64_t) const { return 0.f; }
  void prefetch(int64_t g) const {  // a later group's codes and scales (past the panel: the next one's)
    for (int64_t line = 0; line < kInt8GroupBytes; line += 64) __builtin_prefetch(codes + g * kInt8GroupBytes + line);
    __builtin_prefetch(d + g * kPanel);
  }
#ifdef PYINFER_VNNI512
  void unpack(int64_t g, __m512i* steps) const {
    for (int64_t s = 0; s < 8; ++s) steps[s] = _mm512_loadu_si512(codes + g * kInt8GroupBytes + s * 64);
  }
  __m512 minima(int64_t g) const {
    const __m512 d16 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + g * kPanel)));
    return _mm512_mul_ps(d16, _mm512_set1_ps(-128.f));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  __m256i step(int64_t g, int64_t s, int64_t half) const {  // 8 rows' 4 signed codes of step s
    const __m256i held = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + g * kInt8GroupBytes + s * 64 + half * 32));
    return _mm256_xor_si256(held, _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  // signed by signed: |x| against w with x's sign (a pair's sum is at most 2 * 127 * 127)
  static __m256i dot(__m256i sum, __m256i w, __m256i x) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
#endif
};

// One panel against `tile` activation rows from t0: out[r * 16 + j] = row t0 + r's product with panel row j.
template <int64_t tile, typename Panel>
void panel_tile(const Panel& w, const QuantizedActivations& a, int64_t t0, int64_t k, float* out) {
  const int64_t groups = k / kGroup;
#ifdef PYINFER_VNNI512
  __m512 acc[tile];
  for (int64_t r = 0; r < tile; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i steps[8];
    w.prefetch(g + kPrefetchGroups);
    w.unpack(g, steps);
    const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.d + g * kPanel)));
    const __m512 minima = w.minima(g);
    for (int64_t r = 0; r < tile; ++r) {
      const int64_t row = t0 + r, at = row * groups + g;
      int32_t x[8];  // the group's 8 steps of 4 inputs, each broadcast against the 16 weight rows
      std::memcpy(x, a.q.data() + row * k + g * kGroup, sizeof(x));
      __m512i even = _mm512_dpbusd_epi32(_mm512_setzero_si512(), steps[0], _mm512_set1_epi32(x[0]));
      __m512i odd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), steps[1], _mm512_set1_epi32(x[1]));
      for (int64_t s = 2; s < 8; s += 2) {  // two chains of additions, not one
        even = _mm512_dpbusd_epi32(even, steps[s], _mm512_set1_epi32(x[s]));
        odd = _mm512_dpbusd_epi32(odd, steps[s + 1], _mm512_set1_epi32(x[s + 1]));
      }
      const __m512 dots = _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd));
      acc[r] = _mm512_fmadd_ps(dots, _mm512_mul_ps(scales, _mm512_set1_ps(a.scale[at])), acc[r]);
      acc[r] = _mm512_fmadd_ps(minima, _mm512_set1_ps(a.sum[at]), acc[r]);
    }
  }
  for (int64_t r = 0; r < tile; ++r) _mm512_storeu_ps(out + r * kPanel, acc[r]);
#elif defined(__AVX2__) && defined(__FMA__)
  for (int64_t half = 0; half < 2; ++half) {  // rows 0-7, then 8-15: 8 int32 lanes each
    __m256 acc[tile];
    for (int64_t r = 0; r < tile; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      w.prefetch(g + kPrefetchGroups);
      __m256i dots[tile];
      for (int64_t r = 0; r < tile; ++r) dots[r] = _mm256_setzero_si256();
      for (int64_t s = 0; s < 8; ++s) {
        const __m256i codes = w.step(g, s, half);
        for (int64_t r = 0; r < tile; ++r) {
          int32_t x;
          std::memcpy(&x, a.q.data() + (t0 + r) * k + g * kGroup + s * 4, sizeof(x));
          dots[r] = Panel::dot(dots[r], codes, _mm256_set1_epi32(x));
        }
      }
      const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.d + g * kPanel + half * 8)));
      for (int64_t r = 0; r < tile; ++r) {
        const int64_t at = (t0 + r) * groups + g;
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[r]), _mm256_mul_ps(scales, _mm256_set1_ps(a.scale[at])), acc[r]);
        if constexpr (Panel::has_min) acc[r] = _mm256_fmadd_ps(w.minima(g, half), _mm256_set1_ps(a.sum[at]), acc[r]);
      }
    }
    for (int64_t r = 0; r < tile; ++r) _mm256_storeu_ps(out + r * kPanel + half * 8, acc[r]);
  }
#else
  for (int64_t r = 0; r < tile; ++r) {
    const int64_t row = t0 + r;
    for (int64_t j = 0; j < kPanel; ++j) {
      float total = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        const int8_t* x = a.q.data() + row * k + g * kGroup;
        int32_t dot = 0;
        for (int64_t i = 0; i < kGroup; ++i) dot += w.code(g, j, i) * x[i];
        total += w.scale(g, j) * a.scale[row * groups + g] * static_cast<float>(dot);
        if constexpr (Panel::has_min) total += w.minimum(g, j) * a.sum[row * groups + g];
      }
      out[r * kPanel + j] = total;
    }
  }
#endif
}

// A panel against activation rows t, t + 1, ... in tiles while a whole one remains: writes its `cols`
// columns of y [T, n] (from y's first) and returns the first row left.
template <int64_t tile, typename Panel, typename scalar_t>
int64_t tiles_of(const Panel& w, const QuantizedActivations& a, int64_t k, int64_t t, int64_t rows,
                 scalar_t* y, int64_t n, int64_t cols, float* dots) {
  for (; t + tile <= rows; t += tile) {
    panel_tile<tile>(w, a, t, k, dots);
    for (int64_t r = 0; r < tile; ++r)
      for (int64_t j = 0; j < cols; ++j) y[(t + r) * n + j] = from_float<scalar_t>(dots[r * kPanel + j]);
  }
  return t;
}

// x [T, K] against the panels `panel_of(p)` of an n-row weight; the panels are split across threads.
template <typename scalar_t, typename PanelOf>
at::Tensor integer_matmul(const at::Tensor& x, int64_t n, PanelOf panel_of) {
  using Panel = decltype(panel_of(int64_t{0}));
  const int64_t rows = x.size(0), k = x.size(1);
  const auto a = quantize_activations<scalar_t>(x, Panel::sums);
  auto out = at::empty({rows, n}, x.options());
  scalar_t* y = out.data_ptr<scalar_t>();
  parallel_chunks(0, panels_of(n), 1, [&](int64_t begin, int64_t end) {
    alignas(64) float dots[kRowTile * kPanel];
    for (int64_t p = begin; p < end; ++p) {
      const Panel w = panel_of(p);
      const int64_t cols = std::min(kPanel, n - p * kPanel);
      scalar_t* columns = y + p * kPanel;
      // whole tiles, then tiles of 4 (where the tile is larger), then single rows
      int64_t t = tiles_of<kRowTile>(w, a, k, 0, rows, columns, n, cols, dots);
      if constexpr (kRowTile > 4) t = tiles_of<4>(w, a, k, t, rows, columns, n, cols, dots);
      tiles_of<1>(w, a, k, t, rows, columns, n, cols, dots);
    }
  });
  return out;
}

void check_activations(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [T, K] rows with unit column stride");
  TORCH_CHECK(x.size(1) == k, "x has ", x.size(1), " inputs, the weights ", k);
}

}  // namespace

// x [T, K] @ w^T for w [n, K] as 4-bit blocks in panels: codes [n / 16, K / 32, 256], d and m
// [n / 16, K / 32, 16] fp16 (GGUF's own precision: 20 bytes per 32 weights, as in the file).
at::Tensor int4_blocks_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m,
                          int64_t n) {
  const int64_t k = codes.size(1) * kGroup;
  check_activations(x, k);
  check_panels(codes, kInt4GroupBytes, {&d, &m}, n, k);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "int4_blocks_mm", [&] {
    const uint8_t* w = codes.data_ptr<uint8_t>();
    const at::Half *dp = d.data_ptr<at::Half>(), *mp = m.data_ptr<at::Half>();
    const int64_t groups = k / kGroup;
    out = integer_matmul<scalar_t>(x, n, [&](int64_t p) {
      return Int4Panel{w + p * groups * kInt4GroupBytes, dp + p * groups * kPanel, mp + p * groups * kPanel};
    });
  });
  return out;
}

// x [T, K] @ w^T for w [n, K] = code * d per group of 32 inputs (GGUF's Q8_0) in panels: codes
// [n / 16, K / 32, 512] (w + 128), d [n / 16, K / 32, 16] fp16.
at::Tensor int8_blocks_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, int64_t n) {
  const int64_t k = codes.size(1) * kGroup;
  check_activations(x, k);
  check_panels(codes, kInt8GroupBytes, {&d}, n, k);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "int8_blocks_mm", [&] {
    const uint8_t* w = codes.data_ptr<uint8_t>();
    const at::Half* dp = d.data_ptr<at::Half>();
    const int64_t groups = k / kGroup;
    out = integer_matmul<scalar_t>(
        x, n, [&](int64_t p) { return Int8Panel{w + p * groups * kInt8GroupBytes, dp + p * groups * kPanel}; });
  });
  return out;
}

}  // namespace pyinfer
