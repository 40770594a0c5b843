"""The layering DESIGN.md promises, checked on every import in the package (those inside functions and
TYPE_CHECKING blocks too): server -> engine client and messages -> engine -> models -> attention ->
layers -> kernels, with torch-free base modules (settings, flags, logging, the heap's freeze, sampling
parameters, what the grammar can enforce of a JSON schema, the tokenizer and detokenizer) that any layer
may use. No arrow may run back up."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyinfer"
BASE = {
    "pyinfer",  # the package: its version, and LLM imported lazily
    "pyinfer.args",
    "pyinfer.config",
    "pyinfer.logs",
    "pyinfer.heap",
    "pyinfer.sampling_params",
    "pyinfer.schema_support",
    "pyinfer.detokenizer",
    "pyinfer.tokenizer",
    "pyinfer.generation_config",
    "pyinfer.model_files",
    "pyinfer.run_dirs",
}
LAYERS = [  # bottom first: a module may import its own layer's and those below it
    ("base", lambda m: m in BASE),
    ("kernels", lambda m: m.startswith("pyinfer.kernels")),
    ("layers", lambda m: m.startswith(("pyinfer.layers", "pyinfer.distributed"))),
    ("attention", lambda m: m.startswith("pyinfer.attention")),
    ("models", lambda m: m.startswith("pyinfer.models")),
    ("engine", lambda m: m.startswith("pyinfer.engine")),
    ("server", lambda m: m.startswith("pyinfer.server")),
    ("bench", lambda m: m.startswith("pyinfer.bench")),
    ("cli", lambda m: m in ("pyinfer.cli", "pyinfer.__main__")),
]
# The package's front door, `from pyinfer import LLM`: imported only when asked for (pyinfer/__init__.py).
FRONT_DOOR = {("pyinfer", "pyinfer.engine.llm")}
# What the server may use of the engine: the client of the engine-core process, its messages, the board
# of queued requests its API processes share, and the per-choice output processing it shares with the
# offline LLM.
ENGINE_CLIENT = (
    "pyinfer.engine.core_client",
    "pyinfer.engine.messages",
    "pyinfer.engine.queue_board",
    "pyinfer.engine.outputs",
)


def layer(module: str) -> int:
    return next(i for i, (_, belongs) in enumerate(LAYERS) if belongs(module))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every pyinfer module `path` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pyinfer import cli`
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules}


def test_no_import_runs_back_up():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for target in imports(path):
            if layer(target) > layer(source) and (source, target) not in FRONT_DOOR:
                upward.append(
                    f"{source} ({LAYERS[layer(source)][0]}) -> {target} ({LAYERS[layer(target)][0]})"
                )
    assert upward == []


def test_the_server_reaches_only_the_engine_s_client_side_even_through_other_modules():
    graph = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}
    reached, todo = set(), [m for m in graph if m.startswith("pyinfer.server")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [t for t in graph.get(module, ()) if (module, t) not in FRONT_DOOR]  # lazy, never here
    beyond = sorted(
        m for m in reached if LAYERS[layer(m)][0] not in ("base", "server") and m not in ENGINE_CLIENT
    )
    assert beyond == []
