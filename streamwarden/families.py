"""How to run each upstream family locally: its simulator and the matching sources-file entry.

``streamwarden simulate`` and ``streamwarden demo`` use this table so every family is started
the same way: a credential, an interval and a seed go in; a running simulator and a
``sources.yaml`` entry (credentials as ``${VARIABLE}`` references) come out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from producers.simulators import SIMULATORS

DEMO_BUSINESS_ID = "9bf32959-1fd4-4fa4-83e0-9e9cd80093af"
DEMO_ELEMENT_STREAM = "demo-stream"
DEMO_HEMIS_BUILDING = "demo-building"


@dataclass(frozen=True)
class Family:
    """One upstream family as the demo runs it.

    Attributes:
        kind: source kind (``raw.<kind>.v1``).
        secret_env: variable the producer reads the credential from in the demo.
        make: ``(credential, interval, seed) -> simulator`` (not started).
        entry: ``(source name, simulator url) -> sources.yaml entry``.
    """

    kind: str
    secret_env: str
    make: Callable[[str, float, int | None], Any]
    entry: Callable[[str, str], dict[str, Any]]


def _aliunid(secret: str, interval: float, seed: int | None) -> Any:
    return SIMULATORS["aliunid"](DEMO_BUSINESS_ID, secret, interval=interval, seed=seed)


def _nobil(secret: str, interval: float, seed: int | None) -> Any:
    return SIMULATORS["nobil"](secret, interval=interval, seed=seed)


def _element(secret: str, interval: float, seed: int | None) -> Any:
    return SIMULATORS["element"](
        secret, interval=interval, seed=seed, stream_id=DEMO_ELEMENT_STREAM
    )


def _hemis(secret: str, interval: float, seed: int | None) -> Any:
    return SIMULATORS["hemis"](DEMO_HEMIS_BUILDING, secret, interval=interval, seed=seed)


def _valtronics(secret: str, interval: float, seed: int | None) -> Any:
    return SIMULATORS["valtronics"](secret, interval=interval, seed=seed)


FAMILIES: dict[str, Family] = {
    "aliunid": Family(
        "aliunid",
        "ALIUNID_API_KEY",
        _aliunid,
        lambda name, url: {
            "name": name,
            "kind": "aliunid",
            "url": url,
            "api_key": "${ALIUNID_API_KEY}",
        },
    ),
    "nobil": Family(
        "nobil",
        "NOBIL_API_KEY",
        _nobil,
        lambda name, url: {
            "name": name,
            "kind": "nobil",
            "url": url,
            "api_key": "${NOBIL_API_KEY}",
            "key_param": "apikey",
            "format": "legacy",
        },
    ),
    "element": Family(
        "element",
        "ELEMENT_API_KEY",
        _element,
        lambda name, url: {
            "name": name,
            "kind": "element",
            "url": url,
            "api_key": "${ELEMENT_API_KEY}",
            "scope": "stream",
            "scope_id": DEMO_ELEMENT_STREAM,
            "socket": "readings",
        },
    ),
    "valtronics": Family(
        "valtronics",
        "VALTRONICS_TOKEN",
        _valtronics,
        lambda name, url: {
            "name": name,
            "kind": "valtronics",
            "url": url,
            "token": "${VALTRONICS_TOKEN}",
        },
    ),
    "hemis": Family(
        "hemis",
        "HEMIS_TOKEN",
        _hemis,
        lambda name, url: {
            "name": name,
            "kind": "hemis",
            "url": url,
            "building_id": DEMO_HEMIS_BUILDING,
            "token": "${HEMIS_TOKEN}",
        },
    ),
}
"""Every family the demo runs, in start order."""
