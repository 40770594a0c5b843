// Row-wise kernels, rounding where the PyTorch layers round: residual add + RMSNorm and SiLU-and-mul in
// one pass each, the rotary embedding in place, and the stores of keys and values into the paged cache.
#include "common.h"
#include "ops.h"

namespace pyinfer {
namespace {

template <typename scalar_t>
void rms_norm_impl(const scalar_t* x, const scalar_t* residual, const scalar_t* weight, int64_t rows, int64_t n,
                   int64_t x_stride, int64_t res_stride, float eps, scalar_t* out, scalar_t* res_out) {
  parallel_chunks(0, rows, 16, [&](int64_t begin, int64_t end) {
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

}  // namespace

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
    parallel_chunks(0, tokens, 16, [&](int64_t begin, int64_t end) {
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

// Write keys and values [T, Hk, D] (rows may be strided) into their slots of a [2, Hk, N, bs, D] cache,
// converted to the cache's dtype where it is narrower (fp32 activations over an fp16 or bf16 cache).
void store_kv(at::Tensor& kv_cache, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slot_mapping) {
  TORCH_CHECK(kv_cache.is_contiguous() && k.scalar_type() == v.scalar_type(), "k and v of one dtype, a contiguous cache");
  TORCH_CHECK(k.scalar_type() == kv_cache.scalar_type() || k.scalar_type() == at::kFloat,
              "a cache of another dtype than k and v takes float32 ones");
  TORCH_CHECK(k.stride(2) == 1 && v.stride(2) == 1 && slot_mapping.scalar_type() == at::kLong,
              "k/v rows with unit stride in D, int64 slots");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(1) == kv_cache.size(1) && k.size(2) == kv_cache.size(4) &&
              slot_mapping.numel() == k.size(0), "k and v [T, Hk, D] like the cache, one slot per token");
  auto slots = slot_mapping.contiguous();
  const int64_t tokens = k.size(0), heads = k.size(1), dim = k.size(2);
  const int64_t num_slots = kv_cache.size(2) * kv_cache.size(3);
  const int64_t head_plane = kv_cache.size(2) * kv_cache.size(3) * dim, plane = heads * head_plane;
  const int64_t* slot = slots.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, kv_cache.scalar_type(), "store_kv", [&] {
    using cache_t = scalar_t;
    cache_t* cache = kv_cache.data_ptr<cache_t>();
    const bool same = k.scalar_type() == kv_cache.scalar_type();
    const auto put = [&](cache_t* dst, const at::Tensor& src, int64_t t, int64_t h) {
      const char* row = static_cast<const char*>(src.data_ptr()) + (t * src.stride(0) + h * src.stride(1)) * src.element_size();
      if (same) {
        std::memcpy(dst, row, dim * sizeof(cache_t));
      } else {
        const float* x = reinterpret_cast<const float*>(row);
        for (int64_t d = 0; d < dim; ++d) dst[d] = from_float<cache_t>(x[d]);
      }
    };
    parallel_chunks(0, tokens, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        TORCH_CHECK(slot[t] >= 0 && slot[t] < num_slots, "slot ", slot[t], " outside the KV cache");
        for (int64_t h = 0; h < heads; ++h) {
          cache_t* dst = cache + h * head_plane + slot[t] * dim;
          put(dst, k, t, h);
          put(dst + plane, v, t, h);
        }
      }
    });
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
    parallel_chunks(0, rows, 1, [&](int64_t begin, int64_t end) {
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

}  // namespace pyinfer
