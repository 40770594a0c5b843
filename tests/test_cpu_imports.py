"""A CPU server imports no Triton (its import costs start-up time, and its extension prints leak
reports at exit): neither the HTTP process's modules nor an engine running on the CPU."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import pyinfer.server.app, pyinfer.server.launch  # the HTTP process
from pyinfer import LLM, SamplingParams
llm = LLM(device="cpu", kv_cache_memory_gb=0.05)  # the engine-core process's work, in the default dtype
llm.generate(["Hello"], SamplingParams(max_tokens=3, temperature=0.8, top_k=5, logprobs=2))
print("triton" in sys.modules)
"""


def test_a_cpu_server_and_engine_never_import_triton():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    assert "leaked" not in out.stderr
