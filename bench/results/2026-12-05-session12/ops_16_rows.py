import time, torch
from pyinfer.kernels.cpu import cpu_ops
from pyinfer.layers.quantization import Int4Blocks, quantize_int4
ops = cpu_ops()
T = 16
def ms(f, n=200):
    f(); best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n): f()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e3
w = {name: Int4Blocks(quantize_int4(torch.randn(n, k) * 0.02)) for name, (n, k) in
     dict(qkv=(960, 576), o=(576, 576), gate_up=(3072, 576), down=(576, 1536)).items()}
x = torch.randn(T, 576); h = torch.randn(T, 1536); gu = torch.randn(T, 3072)
norm = torch.ones(576)
for name, b in w.items():
    inp = h if name == "down" else x
    print(name, f"{ms(lambda: ops.int4_blocks_mm(inp, b.codes, b.d, b.m)):.3f}")
print("rms_norm", f"{ms(lambda: ops.rms_norm(x, x.clone(), norm, 1e-5)):.3f}")
print("silu_and_mul", f"{ms(lambda: ops.silu_and_mul(gu)):.3f}")
print("empty parallel op (silu 1 row)", f"{ms(lambda: ops.silu_and_mul(gu[:1])):.3f}")
