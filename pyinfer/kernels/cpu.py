"""C++ kernels for the CPU (pyinfer/csrc: a .cpp file per job, ops.h declaring what bindings.cpp exposes),
compiled for this processor into one module and cached by torch (under ~/.cache/torch_extensions, or
$TORCH_EXTENSIONS_DIR; a container image keeps its own build, read-only, under $PYINFER_PREBUILT_KERNELS_DIR).
An edited header rebuilds what includes it: torch runs ninja at each process's first load, and ninja
follows the compiler's dependency files.

`make install` builds them (`python -m pyinfer.kernels.cpu`, about 30 s on 2 cores); where no compiler
is at hand, or with PYINFER_DISABLE_CPU_KERNELS=1, the PyTorch paths run instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from pyinfer.args import env_switch
from pyinfer.logs import announce_if_slow

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent.parent / "csrc"
# Compiled, one object each, and linked into one module. Named rather than globbed: a stale .cpp left
# beside them (an old build/lib copied into a wheel) would define every kernel twice.
SOURCES = [
    CSRC / name
    for name in (
        "attention.cpp",
        "bindings.cpp",
        "decode_layer.cpp",
        "dequantize.cpp",
        "elementwise.cpp",
        "integer_matmul.cpp",
        "work_pool.cpp",
    )
]
HEADERS = sorted(CSRC.glob("*.h"))  # what they share: not compiled on their own, but part of the source


@functools.cache
def cpu_ops() -> ModuleType | None:
    """The compiled module, or None where it cannot be built (or PYINFER_DISABLE_CPU_KERNELS=1)."""
    if env_switch("PYINFER_DISABLE_CPU_KERNELS"):
        return None
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        build_dir = _build_dir()
        if not os.access(build_dir, os.W_OK) and (build_dir / f"{build_dir.name}.so").exists():
            return _import_built(build_dir)  # a read-only prebuilt one: torch's load() writes a lock there
        build_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_lock(build_dir / "lock")
        # torch builds only what changed since the last build there: nothing, most starts
        with announce_if_slow(log, 3.0, f"building the CPU kernels for this processor in {build_dir}"):
            return load(
                name=build_dir.name,
                sources=[str(source) for source in SOURCES],
                build_directory=str(build_dir),
                # -march=native: built for this processor (hence the name); -ffast-math lets glibc's
                # vector exp serve the loops (SiLU, softmax) and the dot products reassociate.
                extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
    except Exception as e:  # no compiler, headers or ninja: the PyTorch path still works
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        log.warning("CPU kernels unavailable, using the PyTorch path (%s: %s)", type(e).__name__, reason)
        return None


def integer_kernels_choice() -> bool | None:
    """Whether our integer kernels serve quantized weights on this processor where torch has fast int4
    kernels too: PYINFER_INTEGER_KERNELS (1 or 0) if set, else what `python -m pyinfer.bench.int4_paths`
    measured here (`make install` runs it) and kept beside this build; None where neither says."""
    forced = env_switch("PYINFER_INTEGER_KERNELS")
    if forced is not None:
        return forced
    try:
        kept = json.loads(_choice_record().read_text())
        return kept["integer_kernels"] if kept["source"] == _source_hash() else None
    except (OSError, ValueError, KeyError):
        return None


def record_integer_kernels_choice(integer_kernels: bool, measured: dict[str, float]) -> None:
    record = {"integer_kernels": integer_kernels, "source": _source_hash(), **measured}
    _choice_record().write_text(json.dumps(record))


def _choice_record() -> Path:
    return _build_dir() / "integer_kernels.json"


def _source_hash() -> str:
    """The kernels' source, headers included, so that a changed kernel is measured again."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES + HEADERS):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _build_dir() -> Path:
    """Where this processor's build of these sources (and what was measured of it) is kept: in
    PYINFER_PREBUILT_KERNELS_DIR (a container image's read-only tree) when that holds this processor's
    build, else in torch's cache."""
    from torch.utils.cpp_extension import get_default_build_root

    version = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}"
    # one build per source folder too: ninja's rules name the sources' paths, so two checkouts (a clone
    # beside a worktree) sharing one build would each rebuild it at the other's every start
    checkout = hashlib.sha256(str(CSRC).encode()).hexdigest()[:6]
    name = f"pyinfer_cpu_ops_{_processor_id()}_{checkout}"
    if prebuilt_root := os.environ.get("PYINFER_PREBUILT_KERNELS_DIR"):
        prebuilt = Path(prebuilt_root) / version / name
        if (prebuilt / f"{name}.so").exists():
            return prebuilt
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return root / version / name


def _import_built(build_dir: Path) -> ModuleType:
    """The module built in `build_dir`, imported as torch's load() does once the build is up to date."""
    spec = importlib.util.spec_from_file_location(build_dir.name, build_dir / f"{build_dir.name}.so")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
