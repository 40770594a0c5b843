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
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "cpu_ops.cpp"


@functools.cache
def cpu_ops() -> ModuleType | None:
    """The compiled module, or None where it cannot be built (or PYINFER_DISABLE_CPU_KERNELS=1)."""
    if os.environ.get("PYINFER_DISABLE_CPU_KERNELS") == "1":
        return None
    try:
        from torch.utils.cpp_extension import get_default_build_root, load

        _put_ninja_on_path()
        name = f"pyinfer_cpu_ops_{_processor_id()}"
        root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
        build_dir = (
            root / f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}" / name
        )
        build_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_lock(build_dir / "lock")
        return load(
            name=name,
            sources=[str(SOURCE)],
            build_directory=str(build_dir),
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


def _remove_stale_lock(lock: Path, max_age_s: float = 600) -> None:
    """A build killed half-way (Ctrl-C during `make install`) leaves torch's lock file behind, and every
    later load would wait on it forever; a build takes ~20 s, so a lock this old is abandoned."""
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            lock.unlink()
            log.warning("removed an abandoned build lock: %s", lock)
    except FileNotFoundError:
        pass


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
