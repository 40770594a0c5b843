import sys, time, torch
torch.set_num_threads(1)
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.quantization import Int4Blocks, quantize_int4, quantize_int8
import pyinfer; print(pyinfer.__file__, file=sys.stderr)
ops = cpu_ops()
torch.manual_seed(0)
w = Int4Blocks(quantize_int4(torch.randn(3072, 576) * 0.02))
d = Int4Blocks(quantize_int4(torch.randn(576, 1536) * 0.02))
h = quantize_int8(torch.randn(49152 // 4, 576) * 0.02)
def cpu_ms(f, n):
    f()
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n): f()
        best = min(best, (time.process_time() - t) / n * 1e3)
    return best
for rows in (1, 4, 8, 16, 32):
    x = torch.randn(rows, 576); x2 = torch.randn(rows, 1536)
    a = cpu_ms(lambda: ops.int4_blocks_mm(x, w.codes, w.d, w.m), 20)
    b = cpu_ms(lambda: ops.int4_blocks_mm(x2, d.codes, d.d, d.m), 20)
    c = cpu_ms(lambda: ops.int8_blocks_mm(x, h.q, h.scale), 10)
    print(f"rows {rows:3d}  gate_up {a:.3f}  down {b:.3f}  head/4 {c:.3f} ms (1 thread CPU)")
