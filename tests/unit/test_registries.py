"""Every upstream kind is wired everywhere: config, runner, simulator, normalizer, topics, CLI."""

from __future__ import annotations

import click

from pipeline.normalize import NORMALIZERS
from pipeline.topics import UPSTREAM_KINDS, raw_topics
from producers.config import source_kinds
from producers.runner import RUNNERS
from producers.simulators import SIMULATORS
from streamwarden.cli import main
from streamwarden.families import FAMILIES


def test_all_registries_name_the_same_kinds() -> None:
    kinds = set(source_kinds())
    assert kinds == set(RUNNERS)
    assert kinds == set(SIMULATORS)
    assert kinds == set(NORMALIZERS)
    assert kinds == set(UPSTREAM_KINDS)
    assert {f"raw.{k}.v1" for k in kinds} == set(raw_topics())
    assert kinds == set(FAMILIES)


def test_simulate_command_offers_every_kind() -> None:
    simulate = main.commands["simulate"]
    (kind_arg,) = [p for p in simulate.params if p.name == "kinds"]
    assert isinstance(kind_arg.type, click.Choice)
    assert set(kind_arg.type.choices) == set(source_kinds())
