// The Python module: the kernels of ops.h under their Python names (pyinfer/kernels/cpu.py builds and loads it).
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &pyinfer::decode_attention, "paged decode attention over a head-major KV cache");
  m.def("int4_unpack", &pyinfer::int4_unpack, "torch's packed CPU int4 weights back to a dense [N, K] matrix");
  m.def("int4_blocks_mm", &pyinfer::int4_blocks_mm, "x @ w^T for 4-bit block weights, activations quantized to int8");
  m.def("int8_blocks_mm", &pyinfer::int8_blocks_mm, "x @ w^T for int8 weights with a scale per group of 32 (Q8_0)");
  m.def("int4_blocks_dequantize", &pyinfer::int4_blocks_dequantize, "4-bit block weights back to dense fp32");
  m.def("decode_layer", &pyinfer::decode_layer, "one decoder layer of a decode step on 4-bit block weights");
  m.def("rms_norm", &pyinfer::rms_norm, "RMSNorm, with the residual add before it when one is given");
  m.def("silu_and_mul", &pyinfer::silu_and_mul, "SiLU(gate) * up of a merged [gate | up] tensor");
  m.def("rotary_", &pyinfer::rotary_, "rotary embedding in place on q and k");
  m.def("store_kv", &pyinfer::store_kv, "write keys and values into their slots of a head-major paged cache");
}
