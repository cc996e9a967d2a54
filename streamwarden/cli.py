"""The ``streamwarden`` command: the demo, and each part on its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from producers.logformat import LogFormatError, apply_log_format
from streamwarden.process import DIE_WITH_PARENT_ENV, die_with_parent

if TYPE_CHECKING:
    from pipeline.replay import TimeFormat


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        apply_log_format()  # STREAMWARDEN_LOG_FORMAT=text|json; rebalance noise at INFO
    except LogFormatError as exc:
        _fail(f"configuration error: {exc}")


def _fail(message: str, code: int = 1) -> None:
    """Print a user-facing error (one or more lines) and exit; never a traceback."""
    click.echo(message, err=True)
    sys.exit(code)


_CONNECT_TIMEOUT = click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    envvar="STREAMWARDEN_KAFKA_CONNECT_TIMEOUT",
    help="Seconds to keep retrying an unreachable Kafka at start-up before exiting with code 2 "
    "(env STREAMWARDEN_KAFKA_CONNECT_TIMEOUT).",
)


def _preflight(bootstrap: str, connect_timeout: float) -> None:
    """Exit 2 with one clear line when Kafka does not answer within ``connect_timeout`` s."""
    from streamwarden.preflight import KafkaUnreachableError, wait_for_kafka

    try:
        wait_for_kafka(bootstrap, connect_timeout, say=lambda line: click.echo(line, err=True))
    except KafkaUnreachableError as exc:
        _fail(str(exc), code=2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamwarden", prog_name="streamwarden")
def main() -> None:
    """StreamWarden: alerting rules over live energy, EV-charging and IoT streams.

    Producers bring upstream messages into Kafka; the worker normalizes them, evaluates the
    rules in rules/ and sends notifications through apprise.
    """
    if os.environ.get(DIE_WITH_PARENT_ENV):
        die_with_parent()


@main.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--alerts-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append each delivered notification to this file as one JSON line.",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Rule file or folder (default: the example rules shipped with StreamWarden).",
)
@click.option(
    "--channels",
    "channels_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Channels file (default: the shipped one: the console channel, short intervals).",
)
def demo(
    duration: float | None,
    alerts_out: Path | None,
    rules_path: Path | None,
    channels_path: Path | None,
) -> None:
    """Run everything locally: embedded Kafka, upstream simulator, producer, worker.

    Notifications print to this terminal through the built-in console channel.
    """
    from streamwarden.demo import run_demo

    code = run_demo(
        duration=duration,
        alerts_out=alerts_out,
        rules_path=rules_path,
        channels_path=channels_path,
        out=sys.stdout,
    )
    sys.exit(code)


@main.command()
@_CONNECT_TIMEOUT
def worker(connect_timeout: float) -> None:
    """Run the stream-processing worker (normalize, evaluate rules, notify).

    Reads STREAMWARDEN_* variables: KAFKA_BOOTSTRAP (required), KAFKA_EMBEDDED, RULES_PATH,
    CHANNELS_FILE, ALERTS_OUT, PARTITIONS, APP_ID, LOG_LEVEL. Exits 2 if Kafka does not
    answer within --connect-timeout seconds, 1 if its topics have another partition count.
    """
    from pipeline.errors import ConfigError, RuleError
    from pipeline.settings import PipelineSettings
    from pipeline.worker import load_worker_config, run_worker

    settings = PipelineSettings()
    _setup_logging(settings.log_level)
    try:
        config = load_worker_config(settings)
    except RuleError as exc:
        _fail(str(exc))
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    if not settings.kafka_bootstrap:
        _fail(
            "configuration error: STREAMWARDEN_KAFKA_BOOTSTRAP is not set; "
            "set it to host:port of Kafka"
        )
    _preflight(settings.kafka_bootstrap, connect_timeout)
    _check_partitions(settings.kafka_bootstrap, settings.app_id, settings.partitions)
    run_worker(settings, config)


def _check_partitions(bootstrap: str, app_id: str, partitions: int) -> None:
    """Exit 1 naming the topics whose partition count is not the worker's."""
    from pipeline.topics import all_topics
    from streamwarden.preflight import KafkaUnreachableError, partition_mismatches

    expected = {spec.name: spec.partitions for spec in all_topics(app_id, partitions)}
    try:
        found = partition_mismatches(bootstrap, expected)
    except KafkaUnreachableError as exc:
        _fail(str(exc), code=2)
    if not found:
        return
    actual = {m.actual for m in found}
    if all(m.expected == partitions for m in found) and len(actual) == 1:
        advice = (
            f"set STREAMWARDEN_PARTITIONS={actual.pop()} (it is {partitions}): every "
            "StreamWarden topic of a deployment has the same count, because rule state is "
            "co-partitioned with the streams"
        )
    else:
        advice = "recreate those topics with the counts this worker expects"
    _fail(f"configuration error: {'; '.join(map(str, found))}; {advice}")


@main.command()
@click.argument("name")
@_CONNECT_TIMEOUT
def produce(name: str, connect_timeout: float) -> None:
    """Run the producer of source NAME from the sources file into Kafka.

    Reads STREAMWARDEN_KAFKA_BOOTSTRAP (required), STREAMWARDEN_SOURCES_FILE (default
    sources.yaml) and the variables the sources file references.
    """
    from producers.config import find_source, load_sources, secrets_of
    from producers.errors import ProducerError
    from producers.ops import run_with_ops
    from producers.redact import install_secret_filter
    from producers.settings import ProducerSettings
    from producers.sink import KafkaSink

    settings = ProducerSettings()
    _setup_logging(settings.log_level)
    try:
        source = find_source(load_sources(settings.sources_file, only=name), name)
    except ProducerError as exc:
        _fail(f"configuration error: {exc}")
    if not settings.kafka_bootstrap:
        _fail(
            "configuration error: STREAMWARDEN_KAFKA_BOOTSTRAP is not set; "
            "set it to host:port of Kafka"
        )
    install_secret_filter(secrets_of(source))
    _preflight(settings.kafka_bootstrap, connect_timeout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sink = KafkaSink(
            settings.kafka_bootstrap,
            buffer_max_messages=settings.buffer_max_messages,
            client_id=f"streamwarden-{name}",
        )
        try:
            await run_with_ops(source, sink, stop)  # run_source with /metrics, /readyz
        finally:
            await sink.close()

    try:
        asyncio.run(run())
    except ProducerError as exc:
        _fail(f"producer {name!r} stopped: {exc}")


@main.command()
@click.argument("name")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL file to append envelopes to.",
)
@click.option("--max-messages", type=int, default=None, help="Stop after this many frames.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def record(name: str, out_path: Path, max_messages: int | None, duration: float | None) -> None:
    """Record source NAME's frames to a JSONL file (the replay format) instead of Kafka."""
    from producers.config import find_source, load_sources, secrets_of
    from producers.errors import ProducerError
    from producers.redact import install_secret_filter
    from producers.runner import run_source
    from producers.settings import ProducerSettings
    from producers.sink import JsonlSink

    settings = ProducerSettings()
    _setup_logging(settings.log_level)
    try:
        source = find_source(load_sources(settings.sources_file, only=name), name)
    except ProducerError as exc:
        _fail(f"configuration error: {exc}")
    install_secret_filter(secrets_of(source))

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        sink = JsonlSink(out_path, max_messages=max_messages)
        full_watch = asyncio.create_task(sink.full.wait())
        full_watch.add_done_callback(lambda _t: stop.set())
        try:
            await run_source(source, sink, stop)
        finally:
            full_watch.cancel()
            await sink.close()
        return sink.written_total

    try:
        written = asyncio.run(run())
    except ProducerError as exc:
        _fail(f"recording {name!r} stopped: {exc}")
    click.echo(f"recorded {written} frames to {out_path}")


def _family_names() -> list[str]:
    from streamwarden.families import FAMILIES

    return list(FAMILIES)


@main.command()
@click.argument("kinds", nargs=-1, required=True, type=click.Choice(_family_names()))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=int,
    default=0,
    show_default=True,
    help="Port (0 picks a free one; one kind only).",
)
@click.option(
    "--api-key",
    envvar="STREAMWARDEN_SIMULATOR_API_KEY",
    default="demo-api-key",
    show_default=False,
    help="Credential clients must present (env STREAMWARDEN_SIMULATOR_API_KEY).",
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between ticks."
)
@click.option("--seed", type=int, default=None, help="Random seed for reproducible values.")
def simulate(
    kinds: tuple[str, ...], host: str, port: int, api_key: str, interval: float, seed: int | None
) -> None:
    """Serve local simulators of upstream KINDS, each speaking its vendor's real protocol.

    Prints one line per kind, "KIND URL", with the URL clients connect to (never the key).
    """
    from streamwarden.families import FAMILIES

    _setup_logging(os.environ.get("STREAMWARDEN_LOG_LEVEL", "INFO"))
    if port and len(kinds) > 1:
        _fail("--port works with one kind only; leave it at 0 to pick free ports")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        simulators = []
        try:
            for kind in kinds:
                simulator = FAMILIES[kind].make(api_key, interval, seed)
                await simulator.start(host, port)
                simulators.append(simulator)
                click.echo(f"{kind} {simulator.url}")
            sys.stdout.flush()
            await stop.wait()
        finally:
            for simulator in simulators:
                await simulator.stop()

    asyncio.run(run())


@main.command()
@click.option("--partitions", type=int, default=8, show_default=True)
@click.option("--app-id", default="streamwarden", show_default=True)
def broker(partitions: int, app_id: str) -> None:
    """Run an embedded Kafka broker (librdkafka's mock cluster) with every topic created.

    Prints the variables to export for `streamwarden worker` and `streamwarden produce`, and
    STREAMWARDEN_EMBEDDED_BROKER_CONTROL, a local port through which the integration tests
    create their own topics (the embedded broker refuses Kafka's CreateTopics). Nothing is kept
    on disk; stop with Ctrl-C.
    """
    import threading

    from pipeline.topics import all_topics
    from streamwarden.broker_control import CONTROL_ENV, serve_control
    from streamwarden.embedded_broker import EmbeddedBroker

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with EmbeddedBroker() as embedded:
        embedded.create_topics({t.name: t.partitions for t in all_topics(app_id, partitions)})
        control = serve_control(embedded.create_topics)
        host, port = control.server_address[:2]
        click.echo(f"export STREAMWARDEN_KAFKA_BOOTSTRAP={embedded.bootstrap}")
        click.echo("export STREAMWARDEN_KAFKA_EMBEDDED=true")
        click.echo(f"export STREAMWARDEN_PARTITIONS={partitions}")
        click.echo(f"export STREAMWARDEN_APP_ID={app_id}")
        click.echo(f"export {CONTROL_ENV}={host!s}:{port}")
        sys.stdout.flush()
        done.wait()
        control.shutdown()


@main.command()
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Rule file or folder.",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL recording (streamwarden record).",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the transitions here instead of standard output.",
)
@click.option(
    "--time-format",
    type=click.Choice(["iso", "ms"]),
    default="iso",
    show_default=True,
    help="Event times as ISO 8601 UTC (key 'time') or epoch milliseconds (key 'ts_ms').",
)
def replay(
    rules_path: Path, input_path: Path, output_path: Path | None, time_format: TimeFormat
) -> None:
    """Replay a recording through the normalizers and rules in event time.

    Prints each alert transition as one JSON line (rule, state, entity, source, metric, value,
    severity, time, fingerprint), ordered by time. A summary goes to standard error. Exits 1
    if a line of the recording is not an envelope (the transitions of the others are still
    printed).
    """
    import json

    from pipeline.errors import RuleError
    from pipeline.replay import ReplayResult, read_envelopes, transition_line
    from pipeline.replay import replay as run_replay
    from pipeline.rules.engine import RuleEngine
    from pipeline.rules.loader import load_rules

    _setup_logging(os.environ.get("STREAMWARDEN_LOG_LEVEL", "WARNING"))
    try:
        engine = RuleEngine(load_rules([rules_path]))
    except RuleError as exc:
        _fail(str(exc))
    result = ReplayResult()
    run_replay(read_envelopes(input_path, result), engine, result)
    lines = "".join(json.dumps(transition_line(t, time_format)) + "\n" for t in result.transitions)
    if output_path is None:
        sys.stdout.write(lines)
    else:
        output_path.write_text(lines, encoding="utf-8")
    click.echo(
        f"replayed {result.envelopes} envelopes, {result.records} records: "
        f"{len(result.transitions)} transitions, {result.dead_letters} dead letters, "
        f"{result.control_frames} control frames, {result.bad_lines} unreadable lines",
        err=True,
    )
    if result.bad_lines:
        more = result.bad_lines - len(result.line_problems)
        problems = [*result.line_problems, *([f"... and {more} more"] if more else [])]
        _fail("\n".join(problems))


@main.group()
def rules() -> None:
    """Work with rule files."""


@rules.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--channels-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Channels file (default: STREAMWARDEN_CHANNELS_FILE); without one, only the "
    "built-in console channel exists.",
)
def rules_check(paths: tuple[Path, ...], channels_file: Path | None) -> None:
    """Validate rule files; print every problem as file:line: what is wrong; exit 1 if any."""
    from pipeline.errors import ConfigError, RuleError, RuleProblem
    from pipeline.notify.channels import channel_names
    from pipeline.rules.loader import load_rules
    from pipeline.rules.template_names import check_template_names

    if channels_file is None and os.environ.get("STREAMWARDEN_CHANNELS_FILE"):
        channels_file = Path(os.environ["STREAMWARDEN_CHANNELS_FILE"])
    try:
        known = channel_names(channels_file)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
    warnings: list[RuleProblem] = []
    try:
        loaded = load_rules(list(paths), known_channels=known, warnings=warnings)
    except RuleError as exc:
        _fail(str(exc))
    unknown = check_template_names(list(paths))
    if unknown:
        _fail("\n".join(str(p) for p in unknown))
    for w in warnings:  # rules that can match no record (pipeline.rules.catalogue)
        click.echo(f"{w.path}:{w.line}: warning: {w.key}: {w.message}")
    click.echo(f"{len(loaded)} rules OK" + (f", {len(warnings)} warnings" if warnings else ""))


def _register_subcommands() -> None:
    """Command groups kept in their own modules (one job each)."""
    from streamwarden.cli_chaos import chaos
    from streamwarden.cli_notify import notify, silence
    from streamwarden.cli_ops import alerts, notifications, status

    main.add_command(alerts)
    main.add_command(notifications)
    main.add_command(status)
    main.add_command(notify)
    main.add_command(silence)
    main.add_command(chaos)


_register_subcommands()
