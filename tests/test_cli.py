"""The command line's answer to ordinary mistakes: a message and an exit code, never a traceback."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from pyinfer.cli import main


def test_a_missing_model_is_a_message_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["generate", "hi", "--model", str(tmp_path / "no-such-model")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pyinfer generate: error: model ") and "not found" in err
    assert "Traceback" not in err


def test_bench_serve_names_a_server_it_cannot_reach(capsys):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "serve", "--base-url", f"http://127.0.0.1:{port}", "--num-prompts", "1"])
    assert stopped.value.code == 2
    assert f"cannot reach http://127.0.0.1:{port}" in capsys.readouterr().err


def test_a_bad_variable_exits_2_as_a_bad_flag_does(monkeypatch, capsys):
    monkeypatch.setenv("PYINFER_MAX_TOKENS", "many")
    with pytest.raises(SystemExit) as stopped:
        main(["generate", "hi"])
    assert stopped.value.code == 2
    said = "pyinfer generate: error: environment variable PYINFER_MAX_TOKENS='many' is not a valid int\n"
    assert capsys.readouterr().err == said  # one line, shaped as a bad flag's


def test_a_mistyped_variable_is_warned_of_not_ignored_in_silence(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PYINFER_MAX_NUM_SEQ", "4")  # PYINFER_MAX_NUM_SEQS meant
    monkeypatch.setenv("PYINFER_DISABLE_CPU_KERNELS", "0")  # a kernel switch: read where it applies
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--model", str(tmp_path / "no-such-model")])
    err = capsys.readouterr().err
    assert "warning: PYINFER_MAX_NUM_SEQ is not a setting (did you mean PYINFER_MAX_NUM_SEQS?)" in err
    assert "PYINFER_DISABLE_CPU_KERNELS" not in err


@pytest.fixture
def kept_logging():
    """The root logger as it was: `serve` sets its handler on the test's stderr, closed after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def test_every_line_is_json_where_the_log_is_json(monkeypatch, capsys, tmp_path, kept_logging):
    monkeypatch.setenv("PYINFER_MAX_NUM_SEQ", "4")
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--log-format", "json", "--model", str(tmp_path / "no-such-model")])
    assert stopped.value.code == 2
    warning, *rest = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert warning["level"] == "WARNING" and "PYINFER_MAX_NUM_SEQ is not a setting" in warning["message"]
    assert rest and "no-such-model" in rest[-1]["message"]  # the error that stopped the start
    monkeypatch.setenv("PYINFER_API_KEY", "sk-a,")
    with pytest.raises(SystemExit):
        main(["serve", "--log-format", "json"])
    (*_, error) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert error["level"] == "ERROR" and error["message"].endswith("holds an empty item (item 2)")


@pytest.mark.parametrize("asked", [["--log-format", "json"], ["--log-format=json"], []])
def test_a_bad_flag_is_a_json_line_where_the_log_is_json(monkeypatch, capsys, asked):
    if not asked:
        monkeypatch.setenv("PYINFER_LOG_FORMAT", "json")
    with pytest.raises(SystemExit) as stopped:
        main(["serve", *asked, "--max-num-seqs", "abc"])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR" and "--max-num-seqs: invalid int value: 'abc'" in record["message"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--modle", "x"], "unrecognized arguments: --modle x"),
        (["serve", "--max-num-seqs", "abc"], "argument --max-num-seqs: invalid int value: 'abc'"),
        (["bench", "serve", "--num-prompts", "x"], "argument --num-prompts: invalid int value: 'x'"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_command(capsys, argv, said):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    command = " ".join(["pyinfer", *argv[: 2 if argv[0] == "bench" else 1]])
    assert capsys.readouterr().err == f"{command}: error: {said} (see {command} --help)\n"
