"""``streamwarden chaos`` (placeholder until implemented)."""

from __future__ import annotations

import click


@click.command()
def chaos() -> None:
    """Run fault-injection scenarios and print what was lost or duplicated."""
