// One decoder layer of a decode step on 4-bit block weights, from the other files' kernels in one C++ call.
#include "blocks.h"
#include "ops.h"

namespace pyinfer {

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
  // each linear's rows fill its panels (FusedCpuDecode takes no other)
  const auto linear = [](const at::Tensor& in, const std::vector<at::Tensor>& w) {
    return int4_blocks_mm(in, w[0], w[1], w[2], w[0].size(0) * kPanel);
  };
  const int64_t tokens = x.size(0), dim = kv_cache.size(4), q_size = num_heads * dim, kv_size = num_kv_heads * dim;
  auto normed = rms_norm(x, residual, input_norm, input_eps);
  const at::Tensor stream = residual ? normed[1] : x;
  const auto projected = linear(normed[0], qkv);
  TORCH_CHECK(projected.size(1) == q_size + 2 * kv_size, "qkv_proj's width does not match the heads");
  auto q = projected.narrow(1, 0, q_size).view({tokens, num_heads, dim});
  auto k = projected.narrow(1, q_size, kv_size).view({tokens, num_kv_heads, dim});
  const auto v = projected.narrow(1, q_size + kv_size, kv_size).view({tokens, num_kv_heads, dim});
  rotary_(positions, q, k, cos_sin);
  store_kv(kv_cache, k, v, slot_mapping);
  const auto attended = decode_attention(q, kv_cache, block_tables, seq_lens, scale).view({tokens, q_size});
  const auto out = linear(attended, o);
  auto post = rms_norm(out, stream, post_norm, post_eps);
  const auto hidden = silu_and_mul(linear(post[0], gate_up));
  return {linear(hidden, down), post[1]};
}

}  // namespace pyinfer
