// CPU kernels: paged decode attention reading the KV cache in place; int4 weights unpacked to the
// activations' dtype for prefill-sized matmuls (where a dense GEMM beats the int4 kernel); matmuls on
// 4-bit and 8-bit blocks with activations quantized to int8 (AVX2, or AVX-512 VNNI where present); residual add + RMSNorm and SiLU-and-mul in one pass each, rounding where the
// PyTorch layers round.
// Built once by pyinfer/kernels/cpu.py (torch.utils.cpp_extension); the PyTorch backend is the fallback
// and the reference the tests compare against.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

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

// q [B, Hq, D]; kv_cache [2, Hk, num_blocks, block_size, D]; block_tables [B, W]; seq_lens [B] -> out [B, Hq, D].
// One task per (sequence, kv head, span of keys): the G = Hq / Hk query heads that share a kv head read
// each key and value row once, straight from its page, in fp32. Long contexts are cut into spans so that
// every thread has work at batch 1 (SmolLM2 has 3 kv heads for 2 cores); the spans' softmax partials
// are merged after.
template <typename scalar_t, int64_t dim>
void decode_attention_impl(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, double scale, at::Tensor& out) {
  const int64_t batch = q.size(0), num_heads = q.size(1);
  const int64_t num_kv_heads = kv_cache.size(1), num_blocks = kv_cache.size(2), block_size = kv_cache.size(3);
  const int64_t group = num_heads / num_kv_heads, table_width = block_tables.size(1);
  const int64_t plane = num_kv_heads * num_blocks * block_size * dim;  // keys, then values
  const scalar_t* q_ptr = q.data_ptr<scalar_t>();
  const scalar_t* cache = kv_cache.data_ptr<scalar_t>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  scalar_t* out_ptr = out.data_ptr<scalar_t>();
  const int64_t q_stride_b = q.stride(0), q_stride_h = q.stride(1);

  // Spans of at least 64 keys, short enough for about 4 tasks per thread.
  int64_t keys = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(lens[b] >= 1 && lens[b] <= table_width * block_size, "sequence length ", lens[b],
                " outside its block table");
    keys += lens[b] * num_kv_heads;
  }
  const int64_t wanted_tasks = 4 * at::get_num_threads();
  const int64_t span = std::max<int64_t>(64, (keys + wanted_tasks - 1) / wanted_tasks);
  struct Span { int64_t b, h, start, end; };
  std::vector<Span> spans;
  std::vector<int64_t> first_span(batch * num_kv_heads + 1);  // spans of (b, h) = [first[bh], first[bh + 1])
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < num_kv_heads; ++h) {
      first_span[b * num_kv_heads + h] = static_cast<int64_t>(spans.size());
      for (int64_t t = 0; t < lens[b]; t += span) spans.push_back({b, h, t, std::min(lens[b], t + span)});
    }
  first_span.back() = static_cast<int64_t>(spans.size());
  // Per span and query head: the scores' max, the sum of exp(score - max), and the unnormalized output.
  const int64_t num_spans = static_cast<int64_t>(spans.size());
  std::vector<float> span_max(num_spans * group), span_sum(num_spans * group), span_acc(num_spans * group * dim);

  at::parallel_for(0, num_spans, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group * dim), scores;
    alignas(64) float row[dim];
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, h, first, last] = spans[task];
      const int64_t len = last - first;
      scores.assign(group * len, 0.f);
      for (int64_t g = 0; g < group; ++g) {
        const scalar_t* src = q_ptr + b * q_stride_b + (h * group + g) * q_stride_h;
        for (int64_t d = 0; d < dim; ++d) queries[g * dim + d] = to_float(src[d]) * static_cast<float>(scale);
      }
      const scalar_t* head_pages = cache + h * num_blocks * block_size * dim;
      const scalar_t* value_pages = head_pages + plane;
      for (int64_t t = first; t < last; ++t) {
        const int64_t page = tables[b * table_width + t / block_size];
        TORCH_CHECK(page >= 0 && page < num_blocks, "block ", page, " outside the KV cache");
        const scalar_t* key = head_pages + (page * block_size + t % block_size) * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] = to_float(key[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float* __restrict__ qg = queries.data() + g * dim;
          float dot = 0.f;
          for (int64_t d = 0; d < dim; ++d) dot += qg[d] * row[d];
          scores[g * len + t - first] = dot;
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * len;
        const float top = *std::max_element(s, s + len);
        float total = 0.f;
        for (int64_t t = 0; t < len; ++t) total += (s[t] = std::exp(s[t] - top));
        span_max[task * group + g] = top;
        span_sum[task * group + g] = total;
      }
      float* acc = span_acc.data() + task * group * dim;
      for (int64_t t = first; t < last; ++t) {
        const int64_t page = tables[b * table_width + t / block_size];
        const scalar_t* value = value_pages + (page * block_size + t % block_size) * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] = to_float(value[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * len + t - first];
          float* __restrict__ a = acc + g * dim;
          for (int64_t d = 0; d < dim; ++d) a[d] += p * row[d];
        }
      }
    }
  });

  at::parallel_for(0, batch * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> merged(dim);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / num_kv_heads, h = bh % num_kv_heads;
      for (int64_t g = 0; g < group; ++g) {
        float top = span_max[first_span[bh] * group + g], total = 0.f;
        for (int64_t c = first_span[bh] + 1; c < first_span[bh + 1]; ++c) top = std::max(top, span_max[c * group + g]);
        std::fill(merged.begin(), merged.end(), 0.f);
        for (int64_t c = first_span[bh]; c < first_span[bh + 1]; ++c) {
          const float weight = std::exp(span_max[c * group + g] - top);
          total += weight * span_sum[c * group + g];
          const float* a = span_acc.data() + (c * group + g) * dim;
          for (int64_t d = 0; d < dim; ++d) merged[d] += weight * a[d];
        }
        scalar_t* dst = out_ptr + (b * num_heads + h * group + g) * dim;
        const float inv = 1.f / total;
        for (int64_t d = 0; d < dim; ++d) dst[d] = from_float<scalar_t>(merged[d] * inv);
      }
    }
  });
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, "q must be [B, Hq, D] with unit stride in D");
  TORCH_CHECK(kv_cache.dim() == 5 && kv_cache.is_contiguous(), "kv_cache must be a contiguous [2, Hk, N, bs, D]");
  TORCH_CHECK(q.scalar_type() == kv_cache.scalar_type(), "q and kv_cache dtypes differ");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong,
              "block_tables and seq_lens must be int64");
  TORCH_CHECK(q.size(1) % kv_cache.size(1) == 0 && kv_cache.size(4) == q.size(2),
              "q heads must be a multiple of the cache's, with the same head_dim");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == q.size(0) && seq_lens.numel() == q.size(0),
              "one block table row and one length per query");
  auto tables = block_tables.contiguous();
  auto lens = seq_lens.contiguous();
  auto out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const int64_t dim = q.size(2);
  TORCH_CHECK(dim == 64 || dim == 128, "head_dim must be 64 or 128, not ", dim);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "decode_attention", [&] {
    if (dim == 64) decode_attention_impl<scalar_t, 64>(q, kv_cache, tables, lens, scale, out);
    else decode_attention_impl<scalar_t, 128>(q, kv_cache, tables, lens, scale, out);
  });
  return out;
}

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

template <typename scalar_t>
void rms_norm_impl(const scalar_t* x, const scalar_t* residual, const scalar_t* weight, int64_t rows, int64_t n,
                   int64_t x_stride, int64_t res_stride, float eps, scalar_t* out, scalar_t* res_out) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> h(n);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * x_stride;
      float sum = 0.f;
      if (residual != nullptr) {
        const scalar_t* rr = residual + r * res_stride;
        scalar_t* ro = res_out + r * n;
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t rounded = from_float<scalar_t>(to_float(xr[i]) + to_float(rr[i]));
          ro[i] = rounded;
          h[i] = to_float(rounded);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) h[i] = to_float(xr[i]);
      }
      for (int64_t i = 0; i < n; ++i) sum += h[i] * h[i];
      const float rstd = 1.f / std::sqrt(sum / static_cast<float>(n) + eps);
      scalar_t* o = out + r * n;
      for (int64_t i = 0; i < n; ++i)
        o[i] = from_float<scalar_t>(to_float(from_float<scalar_t>(h[i] * rstd)) * to_float(weight[i]));
    }
  });
}

// norm(x) or, with a residual, (norm(x + residual), x + residual); x and residual [T, N] with unit column stride.
std::vector<at::Tensor> rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                 const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1 && weight.is_contiguous(), "x must be [T, N] rows, weight contiguous");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.numel() == x.size(1),
              "weight must match x's dtype and width");
  const int64_t rows = x.size(0), n = x.size(1);
  auto out = at::empty({rows, n}, x.options());
  at::Tensor res_out;
  if (residual) {
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->stride(1) == 1, "residual must be like x");
    res_out = at::empty({rows, n}, x.options());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    rms_norm_impl<scalar_t>(x.data_ptr<scalar_t>(), residual ? residual->data_ptr<scalar_t>() : nullptr,
                            weight.data_ptr<scalar_t>(), rows, n, x.stride(0), residual ? residual->stride(0) : 0,
                            static_cast<float>(eps), out.data_ptr<scalar_t>(),
                            residual ? res_out.data_ptr<scalar_t>() : nullptr);
  });
  if (residual) return {out, res_out};
  return {out};
}

// Rotary embedding in place on q [T, Hq, D] and k [T, Hk, D] (rows may be strided views into one qkv
// tensor), half-split layout; cos_sin [max_position, D] fp32 holds cos in its first half, sin in its second.
void rotary_(const at::Tensor& positions, at::Tensor& q, at::Tensor& k, const at::Tensor& cos_sin) {
  TORCH_CHECK(q.stride(2) == 1 && k.stride(2) == 1 && q.stride(1) == q.size(2) && k.stride(1) == k.size(2),
              "q and k heads must be contiguous rows");
  TORCH_CHECK(cos_sin.scalar_type() == at::kFloat && cos_sin.is_contiguous(), "cos_sin must be contiguous fp32");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.numel() == q.size(0) && k.size(0) == q.size(0),
              "one int64 position per token of q and k");
  TORCH_CHECK(cos_sin.size(1) == q.size(2) && k.size(2) == q.size(2) && q.scalar_type() == k.scalar_type(),
              "cos_sin, q and k must share head_dim, q and k a dtype");
  auto pos = positions.contiguous();
  const int64_t tokens = q.size(0), half = q.size(2) / 2;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "rotary_", [&] {
    const int64_t* p = pos.data_ptr<int64_t>();
    const float* table = cos_sin.data_ptr<float>();
    at::parallel_for(0, tokens, 16, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        TORCH_CHECK(p[t] >= 0 && p[t] < cos_sin.size(0), "position ", p[t], " beyond the rotary table");
        const float* __restrict__ cos = table + p[t] * 2 * half;
        const float* __restrict__ sin = cos + half;
        for (at::Tensor* x : {&q, &k}) {
          scalar_t* row = x->data_ptr<scalar_t>() + t * x->stride(0);
          for (int64_t h = 0; h < x->size(1); ++h) {
            scalar_t* __restrict__ x1 = row + h * 2 * half;
            scalar_t* __restrict__ x2 = x1 + half;
            for (int64_t d = 0; d < half; ++d) {
              const float a = to_float(x1[d]), b = to_float(x2[d]);
              x1[d] = from_float<scalar_t>(a * cos[d] - b * sin[d]);
              x2[d] = from_float<scalar_t>(b * cos[d] + a * sin[d]);
            }
          }
        }
      }
    });
  });
}

// Write keys and values [T, Hk, D] (rows may be strided) into their slots of a [2, Hk, N, bs, D] cache.
void store_kv(at::Tensor& kv_cache, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slot_mapping) {
  TORCH_CHECK(kv_cache.is_contiguous() && k.scalar_type() == kv_cache.scalar_type() &&
              v.scalar_type() == kv_cache.scalar_type(), "k, v and a contiguous cache of one dtype");
  TORCH_CHECK(k.stride(2) == 1 && v.stride(2) == 1 && slot_mapping.scalar_type() == at::kLong,
              "k/v rows with unit stride in D, int64 slots");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(1) == kv_cache.size(1) && k.size(2) == kv_cache.size(4) &&
              slot_mapping.numel() == k.size(0), "k and v [T, Hk, D] like the cache, one slot per token");
  auto slots = slot_mapping.contiguous();
  const int64_t tokens = k.size(0), heads = k.size(1), dim = k.size(2);
  const int64_t num_slots = kv_cache.size(2) * kv_cache.size(3);
  const int64_t head_plane = kv_cache.size(2) * kv_cache.size(3) * dim, plane = heads * head_plane;
  const int64_t bytes = dim * kv_cache.element_size();
  char* cache = static_cast<char*>(kv_cache.data_ptr());
  const int64_t* slot = slots.data_ptr<int64_t>();
  at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      TORCH_CHECK(slot[t] >= 0 && slot[t] < num_slots, "slot ", slot[t], " outside the KV cache");
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t dst = (h * head_plane + slot[t] * dim) * kv_cache.element_size();
        std::memcpy(cache + dst, static_cast<const char*>(k.data_ptr()) + (t * k.stride(0) + h * k.stride(1)) *
                    k.element_size(), bytes);
        std::memcpy(cache + dst + plane * kv_cache.element_size(),
                    static_cast<const char*>(v.data_ptr()) + (t * v.stride(0) + h * v.stride(1)) * v.element_size(),
                    bytes);
      }
    }
  });
}

// x [T, 2N] = [gate | up] -> silu(gate) * up [T, N]
at::Tensor silu_and_mul(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1 && x.size(1) % 2 == 0, "x must be [T, 2N] rows");
  const int64_t rows = x.size(0), n = x.size(1) / 2, stride = x.stride(0);
  auto out = at::empty({rows, n}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "silu_and_mul", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* __restrict__ gate = in + r * stride;
        const scalar_t* __restrict__ up = gate + n;
        scalar_t* __restrict__ dst = o + r * n;
        for (int64_t c = 0; c < n; ++c) {
          const float g = to_float(gate[c]);
          const scalar_t act = from_float<scalar_t>(g / (1.f + std::exp(-g)));
          dst[c] = from_float<scalar_t>(to_float(act) * to_float(up[c]));
        }
      }
    });
  });
  return out;
}

// ---- integer matmuls: y [T, N] = x [T, K] @ w^T, w as 4-bit blocks or int8 rows ----------------------
// x is quantized per group of 32 inputs to int8 (scale max|x| / 127), as llama.cpp does, so that each
// group's products are one integer dot product; the weights are never expanded to floats.

constexpr int64_t kGroup = 32;

// With AVX-512 VNNI two groups (64 bytes) are one product: their int32 sums fill 16 lanes, the first 8
// group g's, the last 8 group g + 1's.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define PYINFER_VNNI512 1
#endif

struct QuantizedActivations {
  std::vector<int8_t> q;    // [T, K]
  std::vector<float> scale;  // [T, K / 32]
  std::vector<float> sum;    // [T, K / 32]: each group's float sum, for the 4-bit blocks' min term (else empty)
  std::vector<float> pair_scale;  // [T, K / 64, 16] with VNNI512: the scales of groups 2p and 2p + 1, 8 lanes each
};

template <typename scalar_t>
QuantizedActivations quantize_activations(const at::Tensor& x, bool with_sums) {
  const int64_t rows = x.size(0), k = x.size(1), groups = k / kGroup, stride = x.stride(0);
  QuantizedActivations a{std::vector<int8_t>(rows * k), std::vector<float>(rows * groups),
                         std::vector<float>(with_sums ? rows * groups : 0)};
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
      int8_t* q = a.q.data() + r * k + g * kGroup;
      for (int64_t i = 0; i < kGroup; ++i) q[i] = static_cast<int8_t>(std::nearbyint(v[i] * inv));
      a.scale[task] = top / 127.f;
      if (with_sums) a.sum[task] = total;
    }
  });
#ifdef PYINFER_VNNI512
  const int64_t pairs = groups / 2;
  a.pair_scale.resize(rows * pairs * 16);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t i = 0; i < 16; ++i) a.pair_scale[(r * pairs + p) * 16 + i] = a.scale[r * groups + 2 * p + i / 8];
#endif
  return a;
}

// Rows of activations handled together for one weight row: its bytes are loaded (and a 4-bit group
// unpacked) once for all of them.
constexpr int64_t kRowTile = 4;

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
// Two fp16 group scales, 8 lanes each, as a pair's products lie.
inline __m512 fp16_pair_scales(const at::Half* d) {
  int32_t two;
  std::memcpy(&two, d, sizeof(two));
  const __m512 both = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(two)));
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), both);
}
#endif

// One weight row as the integer dot products read it, group by group: w = q * scale(g) (+ minimum(g)
// for the 4-bit blocks). `exact_dot` is the plain C++ product of a group with int8
// activations; with AVX2, `load` and `simd_dot` are the same product, 8 lanes at a time.
struct Int4Row {  // 4-bit blocks: byte i of a group holds q[i] in its low nibble, q[i + 16] in its high one
  static constexpr bool has_min = true;
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
  // Groups g and g + 1 as 64 codes in the activations' order: [g low nibbles | g high | g+1 low | g+1 high].
  __m512i load_pair(int64_t g) const {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * 16));
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m512i lo_hi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(raw, mask)),
                                             _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), 1);
    return _mm512_shuffle_i64x2(lo_hi, lo_hi, _MM_SHUFFLE(3, 1, 2, 0));
  }
  static __m512i pair_dot(__m512i codes, __m512i x) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes, x); }
  __m512 pair_scale(int64_t g) const { return fp16_pair_scales(d + g); }
  __m512 minimums16(int64_t g) const {  // the minima of groups g .. g + 15
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + g)));
  }
#endif
};

struct Int8Row {  // int8 weights with one fp16 scale per group of 32 (GGUF's Q8_0)
  static constexpr bool has_min = false;
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
  __m512i load_pair(int64_t g) const { return _mm512_loadu_si512(w + g * kGroup); }
  static __m512i pair_dot(__m512i w, __m512i x) {  // |x| against w with x's sign, as above
    const __m512i zero = _mm512_setzero_si512();
    return _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(x), _mm512_mask_sub_epi8(w, _mm512_movepi8_mask(x), zero, w));
  }
  __m512 pair_scale(int64_t g) const { return fp16_pair_scales(d + g); }
  __m512 minimums16(int64_t) const { return _mm512_setzero_ps(); }
#endif
};

// One weight row against `tile` activation rows starting at t0: out[r] = its dot product with row t0 + r.
template <int64_t tile, typename Row>
void row_dots(const Row& w, const QuantizedActivations& a, int64_t t0, int64_t k, float* out) {
  const int64_t groups = k / kGroup;
  float mins[tile] = {};
#ifdef PYINFER_VNNI512
  const int64_t pairs = groups / 2;
  __m512 acc[tile];
  for (int64_t r = 0; r < tile; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512i weights = w.load_pair(2 * p);
    const __m512 scale = w.pair_scale(2 * p);
    for (int64_t r = 0; r < tile; ++r) {
      const int64_t row = t0 + r;
      const __m512i x = _mm512_loadu_si512(a.q.data() + row * k + 2 * p * kGroup);
      const __m512 x_scale = _mm512_loadu_ps(a.pair_scale.data() + (row * pairs + p) * 16);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(Row::pair_dot(weights, x)), _mm512_mul_ps(scale, x_scale), acc[r]);
    }
  }
  for (int64_t r = 0; r < tile; ++r) {
    const int64_t row = t0 + r;
    float total = _mm512_reduce_add_ps(acc[r]);
    if (groups % 2) {  // the last group alone
      const int64_t g = groups - 1;
      total += w.scale(g) * a.scale[row * groups + g] * static_cast<float>(w.exact_dot(g, a.q.data() + row * k + g * kGroup));
    }
    if constexpr (Row::has_min) {
      __m512 min_acc = _mm512_setzero_ps();
      int64_t g = 0;
      for (; g + 16 <= groups; g += 16)
        min_acc = _mm512_fmadd_ps(w.minimums16(g), _mm512_loadu_ps(a.sum.data() + row * groups + g), min_acc);
      mins[r] = _mm512_reduce_add_ps(min_acc);
      for (; g < groups; ++g) mins[r] += w.minimum(g) * a.sum[row * groups + g];
    }
    out[r] = total + mins[r];
  }
#elif defined(__AVX2__) && defined(__FMA__)
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

// x [T, K] against every weight row `row_of(j)`, j < n; the weight rows are split across threads.
template <typename scalar_t, typename RowOf>
at::Tensor integer_matmul(const at::Tensor& x, int64_t n, RowOf row_of) {
  using Row = decltype(row_of(int64_t{0}));
  const int64_t rows = x.size(0), k = x.size(1);
  const auto a = quantize_activations<scalar_t>(x, Row::has_min);
  auto out = at::empty({rows, n}, x.options());
  scalar_t* y = out.data_ptr<scalar_t>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    float dots[kRowTile];
    for (int64_t j = begin; j < end; ++j) {
      const Row w = row_of(j);
      int64_t t = 0;
      for (; t + kRowTile <= rows; t += kRowTile) {
        row_dots<kRowTile>(w, a, t, k, dots);
        for (int64_t r = 0; r < kRowTile; ++r) y[(t + r) * n + j] = from_float<scalar_t>(dots[r]);
      }
      for (; t < rows; ++t) {
        row_dots<1>(w, a, t, k, dots);
        y[t * n + j] = from_float<scalar_t>(dots[0]);
      }
    }
  });
  return out;
}

void check_block_scales(const at::Tensor& d, const at::Tensor& m, int64_t n, int64_t k) {
  for (const at::Tensor* t : {&d, &m})
    TORCH_CHECK(k % kGroup == 0 && t->scalar_type() == at::kHalf && t->is_contiguous() && t->dim() == 2 &&
                t->size(0) == n && t->size(1) == k / kGroup, "d and m must be contiguous fp16 [N, K / 32]");
}

void check_activations(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [T, K] rows with unit column stride");
  TORCH_CHECK(x.size(1) == k && k % kGroup == 0, "x has ", x.size(1), " inputs, the weights ", k,
              " (a multiple of 32)");
}

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

// The 4-bit blocks back to a dense [N, K] matrix in `dtype` (fp32 or bf16), for prefill-sized products
// (a float GEMM; bf16 where the processor multiplies bf16 natively).
at::Tensor int4_blocks_dequantize(const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m,
                                  at::ScalarType dtype) {
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 2 && codes.is_contiguous(),
              "codes must be contiguous uint8 [N, K / 2]");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "dequantize to float32 or bfloat16");
  const int64_t n = codes.size(0), k = codes.size(1) * 2, groups = k / kGroup;
  check_block_scales(d, m, n, k);
  auto out = at::empty({n, k}, d.options().dtype(dtype));
  const uint8_t* w = codes.data_ptr<uint8_t>();
  const at::Half *dp = d.data_ptr<at::Half>(), *mp = m.data_ptr<at::Half>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "int4_blocks_dequantize", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n * groups, 256, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const uint8_t* src = w + task * 16;
        const float dg = to_float(dp[task]), mg = to_float(mp[task]);
        scalar_t* __restrict__ dst = o + task * kGroup;
        for (int64_t i = 0; i < 16; ++i) {
          dst[i] = from_float<scalar_t>(static_cast<float>(src[i] & 15) * dg + mg);
          dst[i + 16] = from_float<scalar_t>(static_cast<float>(src[i] >> 4) * dg + mg);
        }
      }
    });
  });
  return out;
}

// One decoder layer of a decode step whose linears are 4-bit blocks ({codes, d, m} each): the same
// kernels, in the same order, as the Python layer (LlamaDecoderLayer), without its ~30 Python-level
// calls per layer. x [T, hidden]; residual as the layer takes it (none for the first layer); the step's
// inputs, then the layer's own (fixed) ones. Returns the layer's output and the new residual.
std::vector<at::Tensor> decode_layer(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                     const at::Tensor& positions, at::Tensor& kv_cache, const at::Tensor& slot_mapping,
                                     const at::Tensor& block_tables, const at::Tensor& seq_lens,
                                     const at::Tensor& input_norm, double input_eps, const at::Tensor& post_norm,
                                     double post_eps,
                                     const std::vector<at::Tensor>& qkv, const std::vector<at::Tensor>& o,
                                     const std::vector<at::Tensor>& gate_up, const std::vector<at::Tensor>& down,
                                     int64_t num_heads, int64_t num_kv_heads, const at::Tensor& cos_sin, double scale) {
  for (const auto* w : {&qkv, &o, &gate_up, &down}) TORCH_CHECK(w->size() == 3, "each linear is {codes, d, m}");
  const int64_t tokens = x.size(0), dim = kv_cache.size(4), q_size = num_heads * dim, kv_size = num_kv_heads * dim;
  auto normed = rms_norm(x, residual, input_norm, input_eps);
  const at::Tensor stream = residual ? normed[1] : x;
  const auto projected = int4_blocks_mm(normed[0], qkv[0], qkv[1], qkv[2]);
  TORCH_CHECK(projected.size(1) == q_size + 2 * kv_size, "qkv_proj's width does not match the heads");
  auto q = projected.narrow(1, 0, q_size).view({tokens, num_heads, dim});
  auto k = projected.narrow(1, q_size, kv_size).view({tokens, num_kv_heads, dim});
  const auto v = projected.narrow(1, q_size + kv_size, kv_size).view({tokens, num_kv_heads, dim});
  rotary_(positions, q, k, cos_sin);
  store_kv(kv_cache, k, v, slot_mapping);
  const auto attended = decode_attention(q, kv_cache, block_tables, seq_lens, scale).view({tokens, q_size});
  const auto out = int4_blocks_mm(attended, o[0], o[1], o[2]);
  auto post = rms_norm(out, stream, post_norm, post_eps);
  const auto hidden = silu_and_mul(int4_blocks_mm(post[0], gate_up[0], gate_up[1], gate_up[2]));
  return {int4_blocks_mm(hidden, down[0], down[1], down[2]), post[1]};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention over a head-major KV cache");
  m.def("int4_unpack", &int4_unpack, "torch's packed CPU int4 weights back to a dense [N, K] matrix");
  m.def("int4_blocks_mm", &int4_blocks_mm, "x @ w^T for 4-bit block weights, activations quantized to int8");
  m.def("int8_blocks_mm", &int8_blocks_mm, "x @ w^T for int8 weights with a scale per group of 32 (Q8_0)");
  m.def("int4_blocks_dequantize", &int4_blocks_dequantize, "4-bit block weights back to dense fp32");
  m.def("decode_layer", &decode_layer, "one decoder layer of a decode step on 4-bit block weights");
  m.def("rms_norm", &rms_norm, "RMSNorm, with the residual add before it when one is given");
  m.def("silu_and_mul", &silu_and_mul, "SiLU(gate) * up of a merged [gate | up] tensor");
  m.def("rotary_", &rotary_, "rotary embedding in place on q and k");
  m.def("store_kv", &store_kv, "write keys and values into their slots of a head-major paged cache");
}
