"""Each Triton compile of an engine's start, timed: python compile_times.py MODEL_DIR"""
import sys, threading, time
import triton.compiler as tc

orig = tc.compile
t0 = time.perf_counter()


def timed(src, *args, **kwargs):
    start = time.perf_counter()
    kernel = orig(src, *args, **kwargs)
    name = getattr(getattr(src, "fn", None), "__name__", type(src).__name__)
    print(f"compile {name:28s} at {start - t0:6.2f}s took {time.perf_counter() - start:5.2f}s on {threading.current_thread().name}", flush=True)
    return kernel


tc.compile = timed
import logging
logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6.0f %(name)s: %(message)s")
from pyinfer.engine.llm import LLM
from pyinfer import SamplingParams

llm = LLM(sys.argv[1], load_format="dummy", device="cuda")
print(f"engine up at {time.perf_counter() - t0:.2f}s", flush=True)
llm.generate([[1, 2, 3] * 100] * 4, SamplingParams(max_tokens=8))
print("generated", flush=True)
