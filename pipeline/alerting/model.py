"""Records of the alerting core: notification intents and the dispatcher's state values.

Everything here is a frozen msgspec struct, encoded with msgpack for the changelog table.
State is never mutated in place: the dispatcher builds a new value and assigns it
(``state[key] = new``), so a table wrapper that persists on ``__setitem__`` sees every change.

State keys (strings, stable across releases; the prefix tells the value type)::

    g:<channel>:<16 hex>   GroupState     alerts of one notification group of one channel
    a:<fingerprint>        AlertIndex     the groups an alert was put in (resolves follow it)
    i:<rule #>:<16 hex>    InhibitIndex   firing sources of one inhibit rule and equal labels
    r:<channel>            RateState      the channel's rate-limit window

``g:`` keys have a deadline while something is scheduled, ``r:`` keys while notifications are
held back, ``a:`` keys once the alert resolved (see :func:`deadline`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import msgspec

from pipeline.models import AlertTransition

__all__ = [
    "AlertIndex",
    "Format",
    "GroupEntry",
    "GroupState",
    "InhibitIndex",
    "Kind",
    "Notification",
    "RateState",
    "StateValue",
    "deadline",
    "decode_notification",
    "decode_state",
    "encode_notification",
    "encode_state",
    "notification_id",
]

Kind = Literal["firing", "resolved", "repeat", "digest", "suppressed-summary", "test"]
"""What a notification says: one alert fired or resolved, firing alerts repeated, several
alerts of a group in one digest, a rate-limit summary, or a ``notify test`` message."""

Format = Literal["text", "markdown", "html"]
"""Body format of a channel; passed to apprise as ``body_format``."""


class Notification(msgspec.Struct, frozen=True):
    """One message to send to one channel (an intent: nothing has been sent yet).

    Attributes:
        id: deterministic: the same alerts, transition times, kind and channel give the same
            id, so a re-run after a crash produces the same ids and delivery can be
            deduplicated by it (see :func:`notification_id`).
        channel: channel name (never its URL).
        kind: see :data:`Kind`.
        alerts: the alerts this notification covers, latest transition of each.
        title: rendered title (plain text).
        body: rendered body in ``format``.
        format: ``text``, ``markdown`` or ``html``.
        notify_type: apprise notify type: ``info``, ``success``, ``warning`` or ``failure``.
        created_ms: the time the intent was produced (the ``now_ms`` of the call); not part
            of the id.
        group_labels: the labels the group was formed on.
        suppressed: for ``suppressed-summary``: how many notifications were held back.
    """

    id: str
    channel: str
    kind: Kind
    alerts: tuple[AlertTransition, ...]
    title: str
    body: str
    format: Format
    notify_type: str
    created_ms: int
    group_labels: dict[str, str] = msgspec.field(default_factory=dict)
    suppressed: int = 0

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """Fingerprints of the alerts covered."""
        return tuple(a.fingerprint for a in self.alerts)


class GroupEntry(msgspec.Struct, frozen=True):
    """One alert in a group.

    Attributes:
        alert: its latest transition.
        notified: what the channel was last told about it: ``""`` (nothing yet),
            ``firing`` or ``resolved``.
    """

    alert: AlertTransition
    notified: Literal["", "firing", "resolved"] = ""


class GroupState(msgspec.Struct, frozen=True, tag="group"):
    """A notification group of one channel, with the timing it was created with.

    Settings are a snapshot taken when the group was created, so a deadline is computed from
    the value alone; configuration changes apply to groups created afterwards.

    Attributes:
        channel, route: where the group sends and which route formed it (``rule`` when the
            channel came from the rule's own ``channels``).
        labels: the ``group_by`` label values shared by its alerts.
        group_wait_ms, group_interval_ms, repeat_interval_ms: timing, in ms.
        send_resolved: the channel's resolve switch.
        mute_windows: names of the mute windows that hold its notifications back.
        alerts: entries by fingerprint.
        next_ms: when :meth:`~pipeline.alerting.dispatch.Dispatcher.expire` must run next;
            ``None`` when nothing is scheduled.
        last_flush_ms: when the group last sent (or decided to send) a notification.
        last_notified_ms: when firing alerts were last sent (the base of ``repeat_interval``).
        repeats: repeat notifications sent since firing alerts were last (re)announced.
    """

    channel: str
    route: str
    labels: dict[str, str]
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    send_resolved: bool
    mute_windows: tuple[str, ...] = ()
    alerts: dict[str, GroupEntry] = msgspec.field(default_factory=dict)
    next_ms: int | None = None
    last_flush_ms: int | None = None
    last_notified_ms: int | None = None
    repeats: int = 0


class AlertIndex(msgspec.Struct, frozen=True, tag="alert"):
    """Which group keys an alert was added to, so its resolve reaches every channel that heard
    it fire even after routes changed.

    A resolved alert keeps an entry without groups (a tombstone) until ``expires_ms``, so a
    replayed older transition is still recognised as stale.

    Attributes:
        groups: group state keys.
        state: the alert's latest state.
        ts_ms: its latest transition time (older transitions are ignored as stale).
        expires_ms: when a tombstone may be deleted; None while firing.
    """

    groups: tuple[str, ...]
    state: Literal["firing", "resolved"]
    ts_ms: int
    expires_ms: int | None = None


class InhibitIndex(msgspec.Struct, frozen=True, tag="inhibit"):
    """Firing alerts that match one inhibit rule's source side, for one set of equal labels.

    Attributes:
        sources: fingerprint -> transition time it started firing.
    """

    sources: dict[str, int] = msgspec.field(default_factory=dict)


class RateState(msgspec.Struct, frozen=True, tag="rate"):
    """A channel's current rate-limit window.

    Windows are fixed, aligned to multiples of the window length since the epoch, so every
    worker and every re-run agree on them.

    Attributes:
        window_start_ms, per_ms: the window.
        sent: notifications let through in this window.
        suppressed: notifications held back in this window.
        kinds: held back per kind.
        rules: held back per rule (alerts counted once per notification).
    """

    window_start_ms: int
    per_ms: int
    sent: int = 0
    suppressed: int = 0
    kinds: dict[str, int] = msgspec.field(default_factory=dict)
    rules: dict[str, int] = msgspec.field(default_factory=dict)


StateValue = GroupState | AlertIndex | InhibitIndex | RateState
"""Any value the dispatcher stores."""


def deadline(key: str, value: StateValue) -> int | None:
    """When :meth:`~pipeline.alerting.dispatch.Dispatcher.expire` must be called for ``key``.

    A pure function of the stored value, so the agent can index deadlines as it writes state
    (and rebuild the index by iterating the table once at start-up).

    Returns:
        epoch ms, or ``None`` when the key needs no timer.
    """
    if isinstance(value, GroupState):
        return value.next_ms
    if isinstance(value, RateState) and value.suppressed:
        return value.window_start_ms + value.per_ms
    if isinstance(value, AlertIndex):
        return value.expires_ms
    return None


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder: msgspec.msgpack.Decoder[StateValue] = msgspec.msgpack.Decoder(StateValue)
_notification_decoder = msgspec.msgpack.Decoder(Notification)


def encode_state(value: StateValue) -> bytes:
    """msgpack bytes of a state value (for the changelog table)."""
    return _state_encoder.encode(value)


def decode_state(data: bytes) -> StateValue:
    """Inverse of :func:`encode_state`.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not a state value.
    """
    return _state_decoder.decode(data)


def encode_notification(notification: Notification) -> bytes:
    """msgpack bytes of a notification intent (for an outbox)."""
    return _state_encoder.encode(notification)


def decode_notification(data: bytes) -> Notification:
    """Inverse of :func:`encode_notification`."""
    return _notification_decoder.decode(data)


def notification_id(
    channel: str, kind: str, alerts: Iterable[AlertTransition], extra: str = ""
) -> str:
    """Deterministic id of a notification: 32 hex digits of BLAKE2b over the channel, the kind,
    each covered alert's ``fingerprint:state:ts_ms`` (sorted), and ``extra`` (the repeat
    number of a repeat, the window start of a rate-limit summary)."""
    parts = sorted(f"{a.fingerprint}:{a.state}:{a.ts_ms}" for a in alerts)
    text = "\x1f".join([channel, kind, *parts, extra])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def short_hash(parts: Iterable[str]) -> str:
    """16 hex digits of BLAKE2b over ``parts`` (used in state keys)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
