"""C++ kernels for the CPU (pyinfer/csrc/cpu_ops.cpp), compiled once per machine and cached by torch.

`make install` builds them (`python -m pyinfer.kernels.cpu`); where no compiler is at hand the PyTorch
paths run instead, with a warning.
"""

from __future__ import annotations

import functools
import logging
import os
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
            name="pyinfer_cpu_ops",
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler, headers or ninja: the PyTorch path still works
        log.warning("CPU kernels unavailable, using the PyTorch path (%s: %s)", type(e).__name__, e)
        return None


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
