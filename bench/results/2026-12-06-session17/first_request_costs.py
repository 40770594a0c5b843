"""One-off: the once-per-process costs an API process's first request paid before 6bdd443, each timed
in this fresh interpreter. .venv/bin/python bench/results/2026-12-06-session17/first_request_costs.py"""

import time

import fastapi  # noqa: F401  (what the server has imported before its first request)
import starlette.responses  # noqa: F401
import uvicorn  # noqa: F401

from pyinfer.model_files import default_model_path
from pyinfer.tokenizer import Tokenizer

start = time.perf_counter()
import anyio._backends._asyncio  # noqa: E402, F401  (anyio's lazy import at the first task group)

print(f"anyio asyncio backend import: {(time.perf_counter() - start) * 1e3:.1f} ms")
tokenizer = Tokenizer(default_model_path())
for i in range(3):
    start = time.perf_counter()
    tokenizer.encode_chat([{"role": "user", "content": f"hello there {i}"}])
    print(f"encode_chat call {i + 1}: {(time.perf_counter() - start) * 1e3:.1f} ms")
