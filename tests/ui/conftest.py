"""The web UI in headless Chromium (Debian's, driven by Playwright) against a real `pyinfer serve`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.helpers import ServerProcess, running_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Chromium's own calls home are refused on a closed network; these flags stop it trying.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (`make test` installs it where it runs as root with apt)"
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A skipped UI suite is easy to miss among the dots: say so, and how to enable it."""
    if (reason := _missing()) is not None:
        terminalreporter.write_line(
            f"UI tests skipped: {reason}. Enable them with: sudo apt-get install chromium", yellow=True
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if (reason := _missing()) is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=f"UI tests need Chromium: {reason}"))


# Package scope: the server and the browser go once the UI tests are done. Playwright's sync API keeps an
# asyncio loop marked running on this thread while it is open, which later tests' asyncio.run() refuses.
@pytest.fixture(scope="package")
def ui_server(tmp_path_factory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("ui") / "server.log", "--num-kv-blocks", "512") as srv:
        yield srv


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_server) -> Iterator[Any]:
    """A fresh browser context (empty storage) on the UI; fails the test on any uncaught JS error.

    The page's Content-Security-Policy is bypassed: Playwright's wait_for_function needs eval, and
    the sanitizer test must hold without that second line of defence.
    """
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, base_url=ui_server.base_url, bypass_csp=True
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/")
    page.wait_for_selector("#model option", state="attached")  # /v1/models answered
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="package")
def stats(ui_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_server.base_url, timeout=30) as client:
        yield client


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)
