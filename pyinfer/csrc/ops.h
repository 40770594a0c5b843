// The CPU kernels the Python module exposes (bindings.cpp), one file each for their job:
// attention.cpp: paged decode attention reading the KV cache in place;
// dequantize.cpp: int4 weights unpacked to the activations' dtype for prefill-sized matmuls (where a dense
//   GEMM beats the int4 kernel), and 4-bit blocks back to a dense matrix;
// integer_matmul.cpp: matmuls on 4-bit and 8-bit blocks (in panels of 16 rows, blocks.h) with activations
//   quantized to int8 (AVX2, or AVX-512 VNNI where present);
// elementwise.cpp: residual add + RMSNorm and SiLU-and-mul in one pass each, rounding where the PyTorch
//   layers round; rotary embedding and the KV cache's stores;
// decode_layer.cpp: one decoder layer of a decode step from the kernels above.
// Built once by pyinfer/kernels/cpu.py (torch.utils.cpp_extension); the PyTorch backend is the fallback
// and the reference the tests compare against.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace pyinfer {

// attention.cpp
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& kv_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale);

// dequantize.cpp
at::Tensor int4_unpack(const at::Tensor& packed, const at::Tensor& scales_and_zeros, int64_t group);
at::Tensor int4_blocks_dequantize(const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m, int64_t n,
                                  at::ScalarType dtype);

// integer_matmul.cpp
at::Tensor int4_blocks_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m,
                          int64_t n);
at::Tensor int8_blocks_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, int64_t n);

// elementwise.cpp
std::vector<at::Tensor> rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                 const at::Tensor& weight, double eps);
void rotary_(const at::Tensor& positions, at::Tensor& q, at::Tensor& k, const at::Tensor& cos_sin);
void store_kv(at::Tensor& kv_cache, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slot_mapping);
at::Tensor silu_and_mul(const at::Tensor& x);

// decode_layer.cpp
std::vector<at::Tensor> decode_layer(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                     const at::Tensor& positions, at::Tensor& kv_cache, const at::Tensor& slot_mapping,
                                     const at::Tensor& block_tables, const at::Tensor& seq_lens,
                                     const at::Tensor& input_norm, double input_eps, const at::Tensor& post_norm,
                                     double post_eps,
                                     const std::vector<at::Tensor>& qkv, const std::vector<at::Tensor>& o,
                                     const std::vector<at::Tensor>& gate_up, const std::vector<at::Tensor>& down,
                                     int64_t num_heads, int64_t num_kv_heads, const at::Tensor& cos_sin, double scale);

}  // namespace pyinfer
