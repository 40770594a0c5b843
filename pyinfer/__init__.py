"""PyInfer: a readable, fast LLM inference engine and OpenAI-compatible server."""

import os

# torch's OpenMP threads spin for milliseconds after each parallel region by default, on the cores that
# the CPU kernels' own threads (csrc/work_pool.cpp) then need; a short spin still carries them from one
# region to the next. libgomp reads this once, as torch loads (so only where pyinfer is imported first,
# as its commands do), and it would override a wait policy the user set: then it is left alone.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__version__ = "0.1.0"

from pyinfer.sampling_params import SamplingParams


def __getattr__(name: str):
    if name == "LLM":  # imported lazily: the server process must not import the engine's torch code
        from pyinfer.engine.llm import LLM

        return LLM
    raise AttributeError(name)


__all__ = ["LLM", "SamplingParams", "__version__"]
