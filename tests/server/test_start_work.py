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


@pytest.mark.slow
def test_the_app_s_start_loads_the_streaming_backend_and_freezes_the_heap(smollm2_path):
    """Through the app's own lifespan, until ready: anyio's asyncio backend (which Starlette's first
    streamed response would otherwise import, with the event loop held) is loaded, and the objects the
    start made (its tokenizer imports transformers and torch: some 250,000) are out of the collector's
    scans, which would otherwise walk them while the process streams."""
    run_fresh(
        "import asyncio, gc, sys\n"
        "from pyinfer.config import EngineConfig\n"
        "from pyinfer.server.app import create_app\n"
        "from pyinfer.server.config import ServerConfig\n"
        "backend = 'anyio._backends._asyncio'\n"
        f"engine = EngineConfig(model={smollm2_path!r}, device='cpu', kv_cache_memory_gb=0.25)\n"
        "app = create_app(ServerConfig(), engine)\n"
        "assert backend not in sys.modules, 'already loaded by importing the app'\n"
        "async def start():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        for _ in range(1200):\n"
        "            if app.state.ctx.ready:\n"
        "                break\n"
        "            await asyncio.sleep(0.1)\n"
        "        assert app.state.ctx.ready, 'not ready in 120 s'\n"
        "        assert backend in sys.modules\n"
        "        frozen = gc.get_freeze_count()\n"
        "        assert frozen > 100_000, f'{frozen} objects frozen'\n"
        "asyncio.run(start())\n"
    )
