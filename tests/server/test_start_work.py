"""Work a client's first request would otherwise wait for, done while the server starts; each check in a
fresh interpreter, since this one has long since done that work."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_fresh(script: str) -> None:
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_chat_template_compiled_before_the_first_chat(smollm2_path):
    run_fresh(
        "import jinja2\n"
        "compiles = []\n"
        "compile = jinja2.Environment.compile\n"
        "jinja2.Environment.compile = lambda *a, **k: compiles.append(1) or compile(*a, **k)\n"
        "from pyinfer.config import EngineConfig\n"
        "from pyinfer.server.config import ServerConfig\n"
        "from pyinfer.server.context import ServerContext\n"
        f"ctx = ServerContext(ServerConfig(), EngineConfig(model={smollm2_path!r}))\n"
        "ctx.load_tokenizer()  # as an API process does before it serves\n"
        "tokenizer = ctx.tokenizer\n"
        "assert compiles, 'the template was not compiled'\n"
        "at_start = len(compiles)\n"
        "tokenizer.render_chat([{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}])\n"
        "assert len(compiles) == at_start, 'the first chat compiled the template again'\n"
    )


def test_streaming_backend_loaded_at_start():
    run_fresh(
        "import asyncio, sys\n"
        "from pyinfer.server.app import _load_streaming_backend\n"
        "backend = 'anyio._backends._asyncio'\n"
        "assert backend not in sys.modules, 'already loaded by importing the app'\n"
        "asyncio.run(_load_streaming_backend())\n"
        "assert backend in sys.modules\n"
    )


@pytest.mark.slow
def test_an_api_process_freezes_its_start_up_heap_before_it_serves(smollm2_path):
    """Its tokenizer imports transformers and torch: some 250,000 objects that a full collection while
    serving would walk, holding back every stream of the process."""
    run_fresh(
        "import asyncio, gc\n"
        "from pyinfer.config import EngineConfig\n"
        "from pyinfer.server.config import ServerConfig\n"
        "from pyinfer.server.context import ServerContext\n"
        f"engine = EngineConfig(model={smollm2_path!r}, device='cpu', kv_cache_memory_gb=0.25)\n"
        "ctx = ServerContext(ServerConfig(), engine)\n"
        "async def start():\n"
        "    await ctx.engine.start()\n"
        "    try:\n"
        "        await ctx.load()  # as the lifespan does; ready once it returns\n"
        "        assert ctx.ready\n"
        "        frozen = gc.get_freeze_count()\n"
        "        assert frozen > 100_000, f'{frozen} objects frozen'\n"
        "    finally:\n"
        "        await ctx.engine.shutdown()\n"
        "        ctx.shared.close()\n"
        "asyncio.run(start())\n"
    )
