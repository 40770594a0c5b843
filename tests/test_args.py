"""Flags made from the config dataclasses: names, PYINFER_* variables and their older aliases, negated
and repeated flags, and a clear error for a variable that does not parse."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import re
import subprocess
import sys

import pytest

from pyinfer.args import env_switch
from pyinfer.config import EngineConfig, add_engine_arguments, engine_config_from_args
from pyinfer.server import config as server_config
from pyinfer.server.config import (
    ServerConfig,
    add_server_arguments,
    default_api_server_count,
    server_config_from_args,
    torch_built_for_cuda,
)


def parse(argv: list[str]) -> tuple[EngineConfig, ServerConfig]:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    return engine_config_from_args(args), server_config_from_args(args)


def test_defaults_are_the_dataclasses_own():
    assert parse([]) == (EngineConfig(), ServerConfig())


def test_flags_fill_every_kind_of_field():
    engine_flags = ["--max-num-seqs", "8", "--no-overlap", "--no-prefix-caching", "--enforce-eager"]
    server_flags = ["--port", "9000", "--api-key", "a", "--api-key", "b,c", "--drain-timeout", "1.5"]
    engine, server = parse([*engine_flags, *server_flags, "--log-prompts"])
    assert engine.max_num_seqs == 8 and not engine.overlap_scheduling and not engine.enable_prefix_caching
    assert engine.enforce_eager and server.port == 9000 and server.api_keys == ["a", "b", "c"]
    assert server.drain_timeout == 1.5 and server.log_prompts


def test_prefixed_variables_win_over_the_older_names(monkeypatch):
    monkeypatch.setenv("PORT", "7000")
    monkeypatch.setenv("MODEL_PATH", "old.gguf")
    monkeypatch.setenv("PYINFER_MODEL", "new.gguf")
    monkeypatch.setenv("PYINFER_NO_OVERLAP", "1")
    monkeypatch.setenv("PYINFER_API_KEY", "k1, k2")
    monkeypatch.setenv("PYINFER_CORS_ORIGINS", "http://a.example")
    engine, server = parse([])
    assert server.port == 7000 and engine.model == "new.gguf" and not engine.overlap_scheduling
    assert server.api_keys == ["k1", "k2"] and server.cors_origins == ["http://a.example"]
    engine, server = parse(["--port", "7001", "--api-key", "flag"])
    assert server.port == 7001 and server.api_keys == ["flag"]  # the command line wins over both


def test_a_variable_that_does_not_parse_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PYINFER_PORT", "tcp://10.0.0.1:8000")  # what a Service named pyinfer injects
    with pytest.raises(SystemExit, match=re.escape("PYINFER_PORT='tcp://10.0.0.1:8000' is not a valid int")):
        parse([])
    monkeypatch.setenv("PYINFER_PORT", "8000")
    monkeypatch.setenv("PYINFER_LOG_PROMPTS", "maybe")
    with pytest.raises(SystemExit, match="PYINFER_LOG_PROMPTS"):
        parse([])
    monkeypatch.delenv("PYINFER_LOG_PROMPTS")
    monkeypatch.setenv("PYINFER_NO_OVERLAP", "maybe")  # a flag that turns something off: not taken as set
    with pytest.raises(SystemExit, match="PYINFER_NO_OVERLAP='maybe' is not a valid bool"):
        parse([])


def test_a_value_out_of_range_stops_the_start_naming_its_flag_and_variable(monkeypatch):
    with pytest.raises(SystemExit, match=re.escape("(--rate-limit-rpm or PYINFER_RATE_LIMIT_RPM)")):
        parse(["--rate-limit-rpm", "-5"])
    with pytest.raises(SystemExit, match=re.escape("port must be between 0 and 65535, not 73799")):
        parse(["--port", "73799"])  # which the socket would bind as 8263
    monkeypatch.setenv("PYINFER_MAX_QUEUED_REQUESTS", "-1")
    with pytest.raises(
        SystemExit, match=r"max_queued_requests must be at least 1 .*PYINFER_MAX_QUEUED_REQUESTS"
    ):
        parse([])


@pytest.mark.parametrize(
    "given, message",
    [
        (
            ["--max-model-len", "0"],
            "max_model_len must be at least 32 (--max-model-len or PYINFER_MAX_MODEL_LEN)",
        ),
        (
            ["--kv-events-hwm", "-1"],
            "kv_events_hwm must be at least 0 (--kv-events-hwm or PYINFER_KV_EVENTS_HWM)",
        ),
        (["--device", "gpu"], "device must be cpu, cuda or cuda:N, not 'gpu' (--device"),
        (["--num-kv-blocks", "0"], "num_kv_blocks must be at least 1 (leave it out"),
        (["--kv-cache-memory-gb", "-1"], "kv_cache_memory_gb must be more than 0 (--kv-cache-memory-gb"),
        (["--max-json-whitespace", "0"], "max_json_whitespace must be from 1 to 1024 (--max-json-whitespace"),
        (
            ["--max-json-whitespace", "4096"],
            "max_json_whitespace must be from 1 to 1024 (--max-json-whitespace",
        ),
    ],
)
def test_engine_values_out_of_range_stop_the_start_naming_their_own_flag(given, message):
    """A flag is named by the whole field name the message gives first (max_model_len is not --model)."""
    with pytest.raises(SystemExit, match=re.escape(message)):
        parse(given)


@pytest.mark.parametrize(
    "given", [["--api-key="], ["--api-key", "a", "--api-key", ""], ["--api-key", "a,,b"]]
)
def test_an_empty_api_key_stops_the_start_rather_than_open_the_server(given):
    with pytest.raises(SystemExit, match="--api-key was given an empty value"):
        parse(given)


@pytest.mark.parametrize(
    "variable, value",
    [
        *((name, value) for name in ("PYINFER_API_KEY", "API_KEY") for value in ("", " , ", "sk-a,")),
        ("PYINFER_API_KEY_FILE", ""),
        ("API_KEY_FILE", " "),
    ],
)
def test_a_key_variable_set_empty_stops_the_start_too(monkeypatch, variable, value):
    """A secret that came through empty must not leave the server open, nor its other items be logged."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as e:
        parse([])
    said = {"sk-a,": "holds an empty item (item 2)"}.get(value, "is empty")
    assert str(e.value) == f"environment variable {variable} {said}"  # never the key itself


def test_other_lists_take_an_empty_variable_and_a_flag_overrides_a_bad_one(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "")
    assert parse([])[1].cors_origins == []
    monkeypatch.setenv("PYINFER_API_KEY", "")
    assert parse(["--api-key", "sk-a"])[1].api_keys == ["sk-a"]


def test_api_keys_from_the_variable_are_its_items(monkeypatch):
    monkeypatch.setenv("PYINFER_API_KEY", "sk-a, sk-b")
    assert parse([])[1].api_keys == ["sk-a", "sk-b"]


def test_choices_hold_for_variables_too_and_log_levels_take_any_case(monkeypatch):
    assert parse(["--log-level", "INFO"])[1].log_level == "info"
    monkeypatch.setenv("PYINFER_LOG_LEVEL", "WARNING")
    assert parse([])[1].log_level == "warning"
    monkeypatch.setenv("PYINFER_LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit, match="PYINFER_LOG_LEVEL='verbose' is not one of debug, info"):
        parse([])


def test_a_bad_variable_stops_only_the_command_that_reads_it(monkeypatch):
    from pyinfer.args import check_variables
    from pyinfer.cli import build_parser

    monkeypatch.setenv("PYINFER_PORT", "tcp://10.0.0.1:8000")
    with pytest.raises(SystemExit, match="PYINFER_PORT"):
        check_variables(build_parser(["serve"]).parse_args(["serve"]))
    argv = ["generate", "hi"]  # has no --port: nothing to stop it
    check_variables(build_parser(argv).parse_args(argv))


def test_api_processes_default_to_two_for_a_gpu_engine_and_one_on_the_cpu(monkeypatch):
    assert parse([])[1].api_server_count is None  # decided at launch, by the engine's device
    assert default_api_server_count("cuda") == 2
    assert default_api_server_count("cuda:1") == 2
    assert default_api_server_count("cpu") == 1
    for visible, count in ((True, 2), (False, 1)):  # no --device: what the driver and torch's build say
        monkeypatch.setattr(server_config, "cuda_device_visible", lambda visible=visible: visible)
        assert default_api_server_count(None) == count
    monkeypatch.setenv("PYINFER_API_SERVER_COUNT", "3")
    assert parse([])[1].api_server_count == 3


@pytest.mark.parametrize(
    ("line", "built"), [("cuda: Optional[str] = '12.8'", True), ("cuda: Optional[str] = None", False)]
)
def test_the_gpu_default_needs_a_torch_built_for_cuda(tmp_path, monkeypatch, line, built):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(f"__version__ = '2.11.0'\n{line}\n")
    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "torch")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert torch_built_for_cuda() is built


def test_parsing_a_serve_command_line_imports_no_torch():
    """The launcher parses its command line before it starts the engine core: torch's import (seconds
    with CUDA) must not come first. The benchmarks, which need it, still parse."""
    code = (
        "import sys; from pyinfer.cli import build_parser; "
        "build_parser(['serve']).parse_args(['serve', '--port', '8001']); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "argv = ['bench', 'serve', '--base-url', 'http://127.0.0.1:1']; "
        "assert build_parser().parse_args(argv).base_url == 'http://127.0.0.1:1'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_switches_read_outside_the_flags_take_the_same_words_and_refuse_others(monkeypatch):
    monkeypatch.delenv("PYINFER_DISABLE_CPU_KERNELS", raising=False)
    assert env_switch("PYINFER_DISABLE_CPU_KERNELS") is None
    for word, meant in [("yes", True), ("1", True), ("Off", False), ("0", False)]:
        monkeypatch.setenv("PYINFER_DISABLE_CPU_KERNELS", word)
        assert env_switch("PYINFER_DISABLE_CPU_KERNELS") is meant
    monkeypatch.setenv("PYINFER_DISABLE_CPU_KERNELS", "maybe")
    with pytest.raises(SystemExit, match="PYINFER_DISABLE_CPU_KERNELS='maybe' is not a valid bool"):
        env_switch("PYINFER_DISABLE_CPU_KERNELS")
