"""``streamwarden notify`` and ``streamwarden silence`` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.group()
def notify() -> None:
    """Preview and test notification channels."""


@click.group()
def silence() -> None:
    """Create, list and expire silences."""
