"""C++ kernels for the CPU (pyinfer/csrc/cpu_ops.cpp), compiled for this processor and cached by torch
(under ~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR).

`make install` builds them (`python -m pyinfer.kernels.cpu`, about 20 s on 2 cores); where no compiler
is at hand, or with PYINFER_DISABLE_CPU_KERNELS=1, the PyTorch paths run instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "cpu_ops.cpp"


@functools.cache
def cpu_ops() -> ModuleType | None:
    """The compiled module, or None where it cannot be built (or PYINFER_DISABLE_CPU_KERNELS=1)."""
    if os.environ.get("PYINFER_DISABLE_CPU_KERNELS") == "1":
        return None
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()

        return load(
            name=f"pyinfer_cpu_ops_{_processor_id()}",
            sources=[str(SOURCE)],
            # -march=native: built for this processor (hence the name); -ffast-math lets glibc's vector
            # exp serve the loops (SiLU, softmax) and the dot products reassociate.
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, headers or ninja: the PyTorch path still works
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        log.warning("CPU kernels unavailable, using the PyTorch path (%s: %s)", type(e).__name__, reason)
        return None


def _processor_id() -> str:
    """A short hash of the CPU's model and flags: a build cache shared between machines (a home
    directory, an image) must not hand one processor's -march=native build to another."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.machine(), platform.processor()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]


def _put_ninja_on_path() -> None:
    """torch builds with the `ninja` on PATH; the pip package's binary is not there outside an active venv."""
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print("pyinfer CPU kernels:", "built" if cpu_ops() is not None else "unavailable (PyTorch fallback)")
