"""docker-compose.yml cannot run here (no Docker engine); check it is consistent with the code.

Every StreamWarden service's command must be a real CLI command, and every variable it sets must
be one the code reads: a settings field, a CLI envvar, or a ``${VAR}``/``url_env`` reference in
the config files the service mounts.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

from pipeline.settings import PipelineSettings
from producers.ops import ProducerOpsSettings
from producers.settings import ProducerSettings
from streamwarden.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _streamwarden_services() -> dict[str, dict[str, object]]:
    return {
        name: s
        for name, s in COMPOSE["services"].items()
        if s.get("image", "").startswith("streamwarden")
    }


def _cli_envvars() -> set[str]:
    names: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(main)
    return names


def _config_references() -> set[str]:
    text = "".join(p.read_text() for p in (ROOT / "deploy").glob("*.yaml"))
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", text)) | set(
        re.findall(r"url_env:\s*([A-Z0-9_]+)", text)
    )


def test_kafka_is_pinned_apache_kafka_in_kraft_mode() -> None:
    kafka = COMPOSE["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"])
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in str(COMPOSE).lower()


def test_every_command_exists_in_the_cli() -> None:
    services = _streamwarden_services()
    assert {"worker", "producer-aliunid", "aliunid-simulator", "producer-hemis"} <= set(services)
    for name, service in services.items():
        args = list(service["command"])  # type: ignore[call-overload]
        ctx = main.make_context("streamwarden", args, resilient_parsing=True)
        sub = main.get_command(ctx, args[0])
        assert sub is not None, f"{name}: no command {args[0]!r}"
        sub.make_context(args[0], args[1:])  # raises on unknown options or bad values


def test_every_variable_is_read_by_the_code() -> None:
    settings_vars = {
        f"STREAMWARDEN_{field.upper()}"
        for model in (PipelineSettings, ProducerSettings)
        for field in model.model_fields
    } | {f"STREAMWARDEN_PRODUCER_{field.upper()}" for field in ProducerOpsSettings.model_fields}
    known = settings_vars | _cli_envvars() | _config_references()
    for name, service in _streamwarden_services().items():
        for variable in service.get("environment", {}):  # type: ignore[attr-defined]
            assert variable in known, f"{name}: {variable} is read by nothing"


def test_mounted_config_files_exist_and_rules_path_is_shipped() -> None:
    worker = COMPOSE["services"]["worker"]["environment"]
    assert worker["STREAMWARDEN_RULES_PATH"] == "/app/rules"
    assert worker["STREAMWARDEN_KAFKA_EMBEDDED"] == "false"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY rules ./rules" in dockerfile and "COPY deploy ./deploy" in dockerfile
    for path in ("deploy/sources.yaml", "deploy/channels.yaml"):
        assert (ROOT / path).exists()


def test_every_family_has_a_producer_whose_source_loads() -> None:
    from producers.config import load_sources, source_kinds

    env = {v: "placeholder-secret" for v in _config_references()}
    env["ALIUNID_BUSINESS_ID"] = "9bf32959-1fd4-4fa4-83e0-9e9cd80093af"
    sources = {s.name: s for s in load_sources(ROOT / "deploy" / "sources.yaml", env)}
    assert {s.kind for s in sources.values()} == set(source_kinds())
    services = _streamwarden_services()
    commands = [list(s["command"]) for s in services.values()]  # type: ignore[call-overload]
    produced = {command[1] for command in commands if command[0] == "produce"}
    assert produced == set(sources)


def test_healthchecks_use_readyz_and_prometheus_scrapes_every_part() -> None:
    services = _streamwarden_services()
    worker = services["worker"]
    assert "http://127.0.0.1:9300/readyz" in " ".join(worker["healthcheck"]["test"])  # type: ignore[index]
    assert worker["environment"]["STREAMWARDEN_OPS_HOST"] == "0.0.0.0"  # type: ignore[index]
    producers = {n: s for n, s in services.items() if n.startswith("producer-")}
    for name, service in producers.items():
        assert "http://127.0.0.1:9310/readyz" in " ".join(service["healthcheck"]["test"]), name  # type: ignore[index]
        assert service["environment"]["STREAMWARDEN_PRODUCER_OPS_HOST"] == "0.0.0.0"  # type: ignore[index]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    assert targets == {"worker:9300"} | {f"{n}:9310" for n in producers}
    assert (
        "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in COMPOSE["services"]["prometheus"]["volumes"]
    )


def _exported_metric_names() -> set[str]:
    """Series names the worker's and a producer's collectors export (counters with _total)."""
    from pipeline.ops.metrics import WorkerCollector
    from pipeline.ops.sources import WorkerSources
    from producers.ops import ProducerOps

    worker = WorkerCollector(
        WorkerSources(counters={}, readiness=dict),
        readiness=lambda: (False, {}),
        groups=list,
    )
    producer = ProducerOps("x", object())  # type: ignore[arg-type]
    names: set[str] = set()
    for family in [*worker.collect(), *producer.registry.collect()]:
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"streamwarden_[a-z_]+", e)}
    missing = used - _exported_metric_names()
    assert not missing, missing
