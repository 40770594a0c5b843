// CPU kernels: paged decode attention reading the KV cache in place, and int4 weights unpacked to the
// activations' dtype for prefill-sized matmuls (where a dense GEMM beats the int4 kernel).
// Built once by pyinfer/kernels/cpu.py (torch.utils.cpp_extension); the PyTorch backend is the fallback
// and the reference the tests compare against.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

inline float to_float(float x) { return x; }
inline float to_float(c10::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
inline float to_float(c10::Half x) { return static_cast<float>(x); }

// q [B, Hq, D]; kv_cache [2, Hk, num_blocks, block_size, D]; block_tables [B, W]; seq_lens [B] -> out [B, Hq, D].
// One task per (sequence, kv head): the G = Hq / Hk query heads that share it read each key and value
// row once, straight from its page, in fp32.
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

  at::parallel_for(0, batch * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group * dim), acc(group * dim), scores, totals(group);
    alignas(64) float row[dim];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / num_kv_heads, h = task % num_kv_heads, len = lens[b];
      scores.assign(group * len, 0.f);
      for (int64_t g = 0; g < group; ++g) {
        const scalar_t* src = q_ptr + b * q_stride_b + (h * group + g) * q_stride_h;
        for (int64_t d = 0; d < dim; ++d) queries[g * dim + d] = to_float(src[d]) * static_cast<float>(scale);
      }
      const scalar_t* head_pages = cache + h * num_blocks * block_size * dim;
      for (int64_t t = 0; t < len; ++t) {
        const int64_t page = tables[b * table_width + t / block_size];
        const scalar_t* key = head_pages + (page * block_size + t % block_size) * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] = to_float(key[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float* __restrict__ qg = queries.data() + g * dim;
          float dot = 0.f;
          for (int64_t d = 0; d < dim; ++d) dot += qg[d] * row[d];
          scores[g * len + t] = dot;
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * len;
        const float top = *std::max_element(s, s + len);
        float total = 0.f;
        for (int64_t t = 0; t < len; ++t) total += (s[t] = std::exp(s[t] - top));
        totals[g] = total;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      const scalar_t* value_pages = head_pages + plane;
      for (int64_t t = 0; t < len; ++t) {
        const int64_t page = tables[b * table_width + t / block_size];
        const scalar_t* value = value_pages + (page * block_size + t % block_size) * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] = to_float(value[d]);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * len + t];
          float* __restrict__ a = acc.data() + g * dim;
          for (int64_t d = 0; d < dim; ++d) a[d] += p * row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        scalar_t* dst = out_ptr + (b * num_heads + h * group + g) * dim;
        const float inv = 1.f / totals[g];
        for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<scalar_t>(acc[g * dim + d] * inv);
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

// packed: torch's CPU int4 layout, [N / 64, K, 32] bytes, byte j of row k holding w[j][k] in its low
// nibble and w[j + 32][k] in its high one; scales_and_zeros [K / group, N, 2]. Returns w [N, K] with
// w = (q - 8) * scale + zero.
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
  auto out = at::empty({n, k}, scales_and_zeros.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "int4_unpack", [&] {
    int4_unpack_impl<scalar_t>(packed.data_ptr<uint8_t>(), scales_and_zeros.data_ptr<scalar_t>(), n, k, group,
                               out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention over a head-major KV cache");
  m.def("int4_unpack", &int4_unpack, "torch's packed CPU int4 weights back to a dense [N, K] matrix");
}
