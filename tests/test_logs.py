"""Log lines for work that is usually quick: said only when it is not."""

from __future__ import annotations

import logging
import time

import pytest

from pyinfer.logs import announce_if_slow

log = logging.getLogger("pyinfer.test_logs")


def test_slow_work_is_announced_and_its_end_said(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    with announce_if_slow(log, 0.05, "building things"):
        time.sleep(0.3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "building things..."
    assert messages[1].startswith("building things: ended after ")


def test_quick_work_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    with announce_if_slow(log, 0.5, "building things"):
        pass
    time.sleep(0.6)  # past the moment it would have spoken
    assert caplog.records == []


def test_work_that_fails_still_ends_its_announcement(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    with pytest.raises(RuntimeError), announce_if_slow(log, 0.05, "building things"):
        time.sleep(0.3)
        raise RuntimeError("no compiler")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "building things..."
    assert messages[1].startswith("building things: ended after ")
