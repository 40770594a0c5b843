// Paged decode attention: each query head against its sequence's keys and values, read in place from
// their pages of the KV cache.
#include "common.h"
#include "ops.h"

namespace pyinfer {
namespace {

// One key or value row of the cache as floats, for the generic path (AVX-512 builds widen rows into
// registers instead, below): as it is, or widened (an fp16 or bf16 cache holds half the bytes a decode
// step reads).
template <int64_t dim>
inline const float* row_as_float(const float* src, float*) { return src; }
template <int64_t dim>
inline const float* row_as_float(const c10::Half* src, float* row) {
#if defined(__F16C__) && defined(__AVX__)
  for (int64_t d = 0; d < dim; d += 8)
    _mm256_store_ps(row + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
#else
  for (int64_t d = 0; d < dim; ++d) row[d] = to_float(src[d]);
#endif
  return row;
}
template <int64_t dim, typename cache_t>  // bf16 (a shift of each: vectorized as it is), or double
inline const float* row_as_float(const cache_t* src, float* row) {
  for (int64_t d = 0; d < dim; ++d) row[d] = to_float(src[d]);
  return row;
}

// The rows a step reads lie in pages across memory, a few cache lines each: the prefetchers, which learn
// a stream within a 4 KiB page, lose them at every page; so each key's key and value rows are fetched
// this many keys ahead.
constexpr int64_t kPrefetchKeys = 16;

template <int64_t dim, typename cache_t>
inline void prefetch_row(const cache_t* row) {
  for (int64_t byte = 0; byte < dim * static_cast<int64_t>(sizeof(cache_t)); byte += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(row) + byte);
}

#if defined(__AVX512F__)
// AVX-512: each span's keys scored 16 at a time for up to 4 query heads at once (each key row widened
// once for them, its products left in lanes and summed for 16 keys together), and its values summed in
// registers, so that no row or partial sum goes through memory on the way.
#define PYINFER_ATTENTION_AVX512 1

template <int64_t dim>
inline void widen(const float* src, __m512* v) {
  for (int64_t c = 0; c < dim / 16; ++c) v[c] = _mm512_loadu_ps(src + 16 * c);
}
template <int64_t dim>
inline void widen(const c10::Half* src, __m512* v) {
  for (int64_t c = 0; c < dim / 16; ++c)
    v[c] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 16 * c)));
}
template <int64_t dim>
inline void widen(const c10::BFloat16* src, __m512* v) {
  for (int64_t c = 0; c < dim / 16; ++c) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 16 * c));
    v[c] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
}
template <int64_t dim, typename other_t>
inline void widen(const other_t* src, __m512* v) {  // double: not vectorized
  alignas(64) float row[dim];
  for (int64_t d = 0; d < dim; ++d) row[d] = to_float(src[d]);
  widen<dim>(static_cast<const float*>(row), v);
}

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

// `heads` query heads' scores against the span's keys (row offsets `rows`): scores[h * len + t]. The
// values' rows are fetched ahead too, for span_values after.
template <int heads, int64_t dim, typename cache_t>
void span_scores(const float* queries, const cache_t* keys, const cache_t* values, const int64_t* rows, int64_t len,
                 float* scores) {
  constexpr int64_t chunks = dim / 16;
  __m512 q[heads][chunks], products[heads][16];
  for (int h = 0; h < heads; ++h)
    for (int64_t c = 0; c < chunks; ++c) q[h][c] = _mm512_loadu_ps(queries + h * dim + 16 * c);
  for (int64_t t = 0; t < std::min(kPrefetchKeys, len); ++t) {
    prefetch_row<dim>(keys + rows[t]);
    prefetch_row<dim>(values + rows[t]);
  }
  for (int64_t t0 = 0; t0 < len; t0 += 16) {
    const int64_t n = std::min<int64_t>(16, len - t0);
    for (int64_t i = 0; i < 16; ++i) {
      if (i >= n) {
        for (int h = 0; h < heads; ++h) products[h][i] = _mm512_setzero_ps();
        continue;
      }
      if (t0 + i + kPrefetchKeys < len) {
        prefetch_row<dim>(keys + rows[t0 + i + kPrefetchKeys]);
        prefetch_row<dim>(values + rows[t0 + i + kPrefetchKeys]);
      }
      __m512 key[chunks];
      widen<dim>(keys + rows[t0 + i], key);
      for (int h = 0; h < heads; ++h) {
        __m512 v = _mm512_mul_ps(q[h][0], key[0]);
        for (int64_t c = 1; c < chunks; ++c) v = _mm512_fmadd_ps(q[h][c], key[c], v);
        products[h][i] = v;
      }
    }
    const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1);
    for (int h = 0; h < heads; ++h) _mm512_mask_storeu_ps(scores + h * len + t0, valid, sums_of_16(products[h]));
  }
}

// out[h] = sum over the span of weights[h * len + t] * value t, for `heads` heads.
template <int heads, int64_t dim, typename cache_t>
void span_values(const float* weights, const cache_t* values, const int64_t* rows, int64_t len, float* out) {
  constexpr int64_t chunks = dim / 16;
  __m512 acc[heads][chunks];
  for (int h = 0; h < heads; ++h)
    for (int64_t c = 0; c < chunks; ++c) acc[h][c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    __m512 value[chunks];
    widen<dim>(values + rows[t], value);
    for (int h = 0; h < heads; ++h) {
      const __m512 p = _mm512_set1_ps(weights[h * len + t]);
      for (int64_t c = 0; c < chunks; ++c) acc[h][c] = _mm512_fmadd_ps(p, value[c], acc[h][c]);
    }
  }
  for (int h = 0; h < heads; ++h)
    for (int64_t c = 0; c < chunks; ++c) _mm512_storeu_ps(out + h * dim + 16 * c, acc[h][c]);
}

// f.template operator()<n>() for each chunk of the group's heads: 4 at a time where a row is 4 vectors
// (dim 64), 2 where it is 8, so that the heads' queries or sums and a row fit the 32 registers.
template <int64_t dim, typename F>
void in_head_chunks(int64_t group, F&& f) {
  constexpr int64_t most = dim == 64 ? 4 : 2;
  for (int64_t h0 = 0; h0 < group; h0 += most) {
    switch (std::min(most, group - h0)) {
      case 1: f.template operator()<1>(h0); break;
      case 2: f.template operator()<2>(h0); break;
      case 3: if constexpr (most > 2) f.template operator()<3>(h0); break;
      default: if constexpr (most > 2) f.template operator()<4>(h0); break;
    }
  }
}
#endif

// q [B, Hq, D]; kv_cache [2, Hk, num_blocks, block_size, D]; block_tables [B, W]; seq_lens [B] -> out [B, Hq, D].
// Each of the B rows is one query over the first seq_lens[b] keys of its pages: a decode, or a prompt row
// (the torch backend gives those their sequence's table and their own length). One task per (row, kv
// head, span of keys): the G = Hq / Hk query heads that share a kv head read
// each key and value row once, straight from its page, in fp32. Long contexts are cut into spans so that
// every thread has work at batch 1 (SmolLM2 has 3 kv heads for 2 cores); the spans' softmax partials
// are merged after.
template <typename scalar_t, typename cache_t, int64_t dim>
void decode_attention_impl(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, double scale, at::Tensor& out) {
  const int64_t batch = q.size(0), num_heads = q.size(1);
  const int64_t num_kv_heads = kv_cache.size(1), num_blocks = kv_cache.size(2), block_size = kv_cache.size(3);
  const int64_t group = num_heads / num_kv_heads, table_width = block_tables.size(1);
  const int64_t plane = num_kv_heads * num_blocks * block_size * dim;  // keys, then values
  const scalar_t* q_ptr = q.data_ptr<scalar_t>();
  const cache_t* cache = kv_cache.data_ptr<cache_t>();
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

  parallel_chunks(0, num_spans, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> queries(group * dim), scores;
    std::vector<int64_t> rows;
#ifndef PYINFER_ATTENTION_AVX512
    alignas(64) float row[dim];
#endif
    for (int64_t task = begin; task < end; ++task) {
      const auto [b, h, first, last] = spans[task];
      const int64_t len = last - first;
      scores.resize(group * len);
      rows.resize(len);
      for (int64_t g = 0; g < group; ++g) {
        const scalar_t* src = q_ptr + b * q_stride_b + (h * group + g) * q_stride_h;
        for (int64_t d = 0; d < dim; ++d) queries[g * dim + d] = to_float(src[d]) * static_cast<float>(scale);
      }
      const cache_t* head_pages = cache + h * num_blocks * block_size * dim;
      const cache_t* value_pages = head_pages + plane;
      for (int64_t t = first; t < last; ++t) {  // each key's row in its page (keys and values alike)
        const int64_t page = tables[b * table_width + t / block_size];
        TORCH_CHECK(page >= 0 && page < num_blocks, "block ", page, " outside the KV cache");
        rows[t - first] = (page * block_size + t % block_size) * dim;
      }
      float* acc = span_acc.data() + task * group * dim;
#ifdef PYINFER_ATTENTION_AVX512
      in_head_chunks<dim>(group, [&]<int heads>(int64_t h0) {
        span_scores<heads, dim>(queries.data() + h0 * dim, head_pages, value_pages, rows.data(), len,
                                scores.data() + h0 * len);
      });
#else
      for (int64_t t = 0; t < len; ++t) {
        if (t + kPrefetchKeys < len) {
          prefetch_row<dim>(head_pages + rows[t + kPrefetchKeys]);
          prefetch_row<dim>(value_pages + rows[t + kPrefetchKeys]);
        }
        const float* __restrict__ key = row_as_float<dim>(head_pages + rows[t], row);
        for (int64_t g = 0; g < group; ++g) {
          const float* __restrict__ qg = queries.data() + g * dim;
          float dot = 0.f;
          for (int64_t d = 0; d < dim; ++d) dot += qg[d] * key[d];
          scores[g * len + t] = dot;
        }
      }
#endif
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * len;
        const float top = *std::max_element(s, s + len);
        float total = 0.f;
        for (int64_t t = 0; t < len; ++t) total += (s[t] = std::exp(s[t] - top));
        span_max[task * group + g] = top;
        span_sum[task * group + g] = total;
      }
#ifdef PYINFER_ATTENTION_AVX512
      in_head_chunks<dim>(group, [&]<int heads>(int64_t h0) {
        span_values<heads, dim>(scores.data() + h0 * len, value_pages, rows.data(), len, acc + h0 * dim);
      });
#else
      std::fill(acc, acc + group * dim, 0.f);
      for (int64_t t = 0; t < len; ++t) {
        const float* __restrict__ value = row_as_float<dim>(value_pages + rows[t], row);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * len + t];
          float* __restrict__ a = acc + g * dim;
          for (int64_t d = 0; d < dim; ++d) a[d] += p * value[d];
        }
      }
#endif
    }
  });

  parallel_chunks(0, batch * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
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

}  // namespace

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, "q must be [B, Hq, D] with unit stride in D");
  TORCH_CHECK(kv_cache.dim() == 5 && kv_cache.is_contiguous(), "kv_cache must be a contiguous [2, Hk, N, bs, D]");
  TORCH_CHECK(q.scalar_type() == kv_cache.scalar_type() || q.scalar_type() == at::kFloat,
              "a cache of another dtype than q takes float32 queries");
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
  const auto run = [&](auto q_type, auto cache_type) {
    using scalar_t = decltype(q_type);
    using cache_t = decltype(cache_type);
    if (dim == 64) decode_attention_impl<scalar_t, cache_t, 64>(q, kv_cache, tables, lens, scale, out);
    else decode_attention_impl<scalar_t, cache_t, 128>(q, kv_cache, tables, lens, scale, out);
  };
  if (q.scalar_type() == kv_cache.scalar_type()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "decode_attention",
                                    [&] { run(scalar_t{}, scalar_t{}); });
  } else {  // float32 queries over a narrower cache
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, kv_cache.scalar_type(), "decode_attention",
                                    [&] { run(float{}, scalar_t{}); });
  }
  return out;
}

}  // namespace pyinfer
