"""docker-compose.yml cannot run here (no Docker engine); check it is consistent with the code.

Every StreamWarden service's command must be a real CLI command, and every variable it sets must
be one the code reads: a settings field, a CLI envvar, or a ``${VAR}``/``url_env`` reference in
the config files the service mounts.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import click
import pytest
import yaml
from pydantic import BaseModel

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


def _mounts(service: dict[str, object]) -> dict[str, tuple[str, bool]]:
    """container path -> (host path or volume name, read-only)."""
    out = {}
    for spec in service.get("volumes", []):  # type: ignore[attr-defined]
        host, container, *mode = str(spec).split(":")
        out[container] = (host, mode == ["ro"])
    return out


def _inside(path: str, mounts: dict[str, tuple[str, bool]]) -> tuple[str, bool] | None:
    for container, mount in mounts.items():
        if path == container or path.startswith(container.rstrip("/") + "/"):
            return mount
    return None


def test_rules_channels_and_sources_are_mounted_not_baked() -> None:
    worker = COMPOSE["services"]["worker"]
    env = worker["environment"]
    mounts = _mounts(worker)
    assert env["STREAMWARDEN_KAFKA_EMBEDDED"] == "false"
    assert _inside(env["STREAMWARDEN_RULES_PATH"], mounts) == ("./rules", True)
    assert _inside(env["STREAMWARDEN_CHANNELS_FILE"], mounts) == ("./deploy/channels.yaml", True)
    for name, service in _streamwarden_services().items():
        if next(iter(service["command"])) == "produce":  # type: ignore[call-overload]
            sources = service["environment"]["STREAMWARDEN_SOURCES_FILE"]  # type: ignore[index]
            assert _inside(sources, _mounts(service)) == ("./deploy/sources.yaml", True), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy " not in dockerfile.replace("deploy/requirements.lock", "")
    for path in ("deploy/sources.yaml", "deploy/channels.yaml", "rules"):
        assert (ROOT / path).exists()


def test_the_data_directory_and_the_silences_file_are_in_a_writable_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.alerting.config import load_config

    worker = COMPOSE["services"]["worker"]
    monkeypatch.setenv("STREAMWARDEN_DATA_DIR", worker["environment"]["STREAMWARDEN_DATA_DIR"])
    mounts = _mounts(worker)
    data = _inside(worker["environment"]["STREAMWARDEN_DATA_DIR"], mounts)
    assert data is not None and data[0] in COMPOSE["volumes"] and not data[1]
    silences = load_config(ROOT / "deploy" / "channels.yaml").silences_file
    assert silences is not None and silences.is_absolute()
    assert _inside(str(silences), mounts) == data


def test_channel_urls_come_from_compose_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.alerting.config import load_config

    worker = COMPOSE["services"]["worker"]
    monkeypatch.setenv("STREAMWARDEN_DATA_DIR", worker["environment"]["STREAMWARDEN_DATA_DIR"])
    config = load_config(ROOT / "deploy" / "channels.yaml")
    secrets = COMPOSE["secrets"]
    for name, spec in config.spec.channels.items():
        assert spec.url_env is None, f"{name}: use url_file, not a variable"
        assert spec.url_file is not None and spec.url_file.startswith("/run/secrets/"), name
        secret = spec.url_file.removeprefix("/run/secrets/")
        assert secret in worker["secrets"] and secret in secrets, name
        host_file = Path(secrets[secret]["file"])
        assert host_file.parent == Path("deploy/secrets")
        assert (ROOT / f"{host_file}.example").is_file()
    assert not any(v.startswith("STREAMWARDEN_CHANNEL_") for v in worker["environment"])


def test_the_worker_sets_no_table_store() -> None:
    """Table state lives in memory and is recovered from its changelogs (issue 18): a store
    setting in the deployment would promise what the worker does not do."""
    env = COMPOSE["services"]["worker"]["environment"]
    readme = (ROOT / "README.md").read_text()
    assert "STREAMWARDEN_STORE" not in env
    assert "table state is held in\nmemory and recovered from the changelogs" in readme


def test_every_image_is_pinned() -> None:
    for name, service in COMPOSE["services"].items():
        image = service["image"]
        if name in _streamwarden_services():
            assert "build" in service and re.fullmatch(r"streamwarden:\d+\.\d+\.\d+", image)
        else:
            assert re.fullmatch(r"[\w./-]+(:v?\d+\.\d+\.\d+)?(@sha256:[0-9a-f]{64})?", image)
            assert ":" in image and not image.endswith(":latest"), name
    (base,) = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirement_name(text: str) -> str:
    return _normalized(re.split(r"[\[<>=!~; ]", text, maxsplit=1)[0])


def test_the_service_image_installs_the_lock_file_with_hashes() -> None:
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/requirements.lock" in dockerfile
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    pinned = {_normalized(k): v for k, v in pinned.items()}
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock)
    assert all("--hash=sha256:" in e for e in entries if "==" in e)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = {_requirement_name(d) for d in dependencies} - set(pinned)
    assert not missing, (
        f"{missing} not in deploy/requirements.lock: regenerate it with the command at its top"
    )


def _channels_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    keys: set[str] = set()
    seen.add(model)
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        for inner in _models_in(field.annotation):
            if inner not in seen:
                keys |= _channels_keys(inner, seen)
    return keys


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _yaml_keys(data: object) -> set[str]:
    if isinstance(data, dict):
        return {str(k) for k in data} | {k for v in data.values() for k in _yaml_keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in _yaml_keys(v)}
    return set()


def test_the_readme_documents_every_channels_yaml_key_with_an_example(tmp_path: Path) -> None:
    from pipeline.alerting.config import ChannelsFile, load_config

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Channels", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    documented = _yaml_keys(yaml.safe_load(example))
    missing = _channels_keys(ChannelsFile, set()) - documented
    assert not missing, f"channels.yaml keys without an example in the README: {missing}"
    # ... and the example is a valid file.
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ops-email.html.j2").write_text("<p>{{ alert.rule }}</p>")
    (tmp_path / "channels.yaml").write_text(example)
    config = load_config(tmp_path / "channels.yaml")
    assert set(config.channels) >= {"ops-email", "team-slack", "lab-hook"}


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
