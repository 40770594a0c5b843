# run at 7b120ae+pool, before ccc300e: moves the dense crossover by hand (cpu_decode's applies no longer reads it)
import sys, time
sys.argv=["x"]
src=open("bench/structured_output.py").read().split("masks = engine.runner.masks")[0]
exec(src)
import pyinfer.layers.quantization as q, pyinfer.engine.cpu_decode as c
for label in ("dense from 64", "integer at 64", "dense from 64"):
    big = label.startswith("integer")
    q.BLOCKS_DENSE_MIN_ROWS = c.BLOCKS_DENSE_MIN_ROWS = 10**9 if big else 64
    print(label, [round(step_ms(r, False), 2) for r in (48, 64)])
