"""The alert lifecycle after the rule engine: alert transitions in, notification intents out.

:class:`Dispatcher` is plain Python with explicit times: no faust, no clock, no I/O except
what its :class:`~pipeline.alerting.silences.SilenceSource` does. State lives in a
caller-owned ``MutableMapping[str, StateValue]`` (a dict in tests, a changelog table in the
worker; keys and values in :mod:`pipeline.alerting.model`).

Two entry points, both returning the notifications to send now:

- :meth:`Dispatcher.dispatch` ``(state, alert, now_ms)`` for each ``alerts.v1`` record;
- :meth:`Dispatcher.expire` ``(state, key, now_ms)`` when a key's
  :func:`~pipeline.alerting.model.deadline` has come (group_wait, group_interval,
  repeat_interval, end of a mute window or silence, end of a rate-limit window).

``now_ms`` is processing time (the wall clock when the agent runs): group_wait and
repeat_interval are about when people are told. An alert's ``ts_ms`` (event time) is only
used to order transitions and in notification ids.

Lifecycle, per channel:

1. **Routing** picks the channels (see :mod:`pipeline.alerting.config` for the precedence)
   and each channel's timing. A firing alert joins one group per channel, keyed by the
   values of ``group_by``; the alert remembers its groups, so its resolve goes exactly where
   its firing went, even if routes changed in between.
2. **Grouping**: a new group waits ``group_wait`` and then sends one notification for all its
   alerts; later changes are batched and sent at most every ``group_interval``. One alert
   gives a ``firing`` or ``resolved`` notification, several a ``digest`` (all firing alerts
   of the group plus the newly resolved ones).
3. **Repeat**: while alerts stay firing and nothing changes, the group's firing alerts are
   sent again every ``repeat_interval`` (kind ``repeat``).
4. **Resolve**: an alert the channel was told is firing gets a resolve notification, unless
   the channel has ``send_resolved: false``. An alert that resolves before the channel heard
   of it (within group_wait, or while silenced) is dropped without a word.
5. **Silences** and **inhibition** leave firing alerts out of notifications and repeats;
   they are re-checked every ``group_interval`` and when the silence ends, and announced
   then if still firing. They do not hold back the resolve of an alert the
   channel was told about: "it is over" is never noise.
6. **Mute windows** postpone a group's notifications (all kinds) to the end of the window.
7. **Rate limit**: at most ``max`` notifications per channel per fixed window of ``per``;
   the rest are dropped and counted, and when the window ends one ``suppressed-summary``
   notification says how many and for which rules.

Idempotence: a transition older than (or equal to) the last one seen for its fingerprint is
ignored, so replaying ``alerts.v1`` after a crash changes nothing; notification ids are
derived from content (:func:`~pipeline.alerting.model.notification_id`), so a re-run that
does produce an intent again produces the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass

import msgspec

from pipeline.alerting.config import AlertingConfig, InhibitRule, Timing
from pipeline.alerting.matchers import match_labels, matches_all
from pipeline.alerting.model import (
    AlertIndex,
    GroupEntry,
    GroupState,
    InhibitIndex,
    Kind,
    Notification,
    RateState,
    StateValue,
    notification_id,
    short_hash,
)
from pipeline.alerting.silences import ActiveSilence, SilenceSource
from pipeline.alerting.stats import ChannelStats
from pipeline.alerting.suppressed import SuppressionLog
from pipeline.alerting.templates import Renderer
from pipeline.models import AlertTransition

__all__ = ["RESOLVED_TOMBSTONE_MS", "Dispatcher", "State", "Target"]

logger = logging.getLogger(__name__)

State = MutableMapping[str, StateValue]

RESOLVED_TOMBSTONE_MS = 24 * 3_600_000
"""How long a resolved alert's index entry is kept, so a replayed older transition is
recognised as stale."""

_MAX_MUTE_STEPS = 16


@dataclass(frozen=True)
class Target:
    """Where an alert goes: a channel, the route that chose it (``rule`` for the rule's own
    channels) and the timing to use."""

    channel: str
    route: str
    timing: Timing


def group_key(channel: str, digest: str) -> str:
    """State key of a group."""
    return f"g:{channel}:{digest}"


def alert_key(fingerprint: str) -> str:
    """State key of an alert's index entry."""
    return f"a:{fingerprint}"


def rate_key(channel: str) -> str:
    """State key of a channel's rate-limit window."""
    return f"r:{channel}"


def inhibit_key(rule: InhibitRule, labels: dict[str, str]) -> str:
    """State key of an inhibit rule's firing sources for the ``equal`` label values."""
    return f"i:{rule.index}:{short_hash(labels.get(name, '') for name in rule.equal)}"


def _notify_type(kind: Kind, alerts: Sequence[AlertTransition]) -> str:
    if kind in ("suppressed-summary", "test"):
        return "info"
    firing = [a for a in alerts if a.state == "firing"]
    if not firing:
        return "success"
    return "failure" if any(a.severity == "critical" for a in firing) else "warning"


class Dispatcher:
    """Turns alert transitions into notification intents (see the module docstring).

    Args:
        config: the validated ``channels.yaml``.
        renderer: renders titles and bodies per channel.
        silences: where silences come from; none when omitted.
        stats: counters to add to (``suppressed``, ``silenced``, ``inhibited``, ``muted``).
    """

    def __init__(
        self,
        config: AlertingConfig,
        renderer: Renderer,
        *,
        silences: SilenceSource | None = None,
        stats: ChannelStats | None = None,
    ) -> None:
        self.config = config
        self.renderer = renderer
        self.silences = silences or SilenceSource()
        self.stats = stats or ChannelStats()
        self.suppressions = SuppressionLog()
        """Says once why alerts were held back (set its ``listener`` to record them)."""

    # --- routing ----------------------------------------------------------------------------

    def route(self, alert: AlertTransition) -> list[Target]:
        """The channels ``alert`` goes to, with their timing: the rule's channels first, then
        channels added by routes, each once (see :mod:`pipeline.alerting.config`)."""
        labels = match_labels(alert)
        from_routes: dict[str, Target] = {}
        for route in self.config.routes:
            if not matches_all(route.matchers, labels):
                continue
            for channel in route.channels:
                from_routes.setdefault(channel, Target(channel, route.name, route.timing))
            if not route.continue_:
                break
        targets: dict[str, Target] = {}
        for channel in alert.channels:
            targets.setdefault(
                channel, from_routes.get(channel) or Target(channel, "rule", self.config.defaults)
            )
        for channel, target in from_routes.items():
            targets.setdefault(channel, target)
        return list(targets.values())

    def _group_for(self, alert: AlertTransition, target: Target) -> tuple[str, dict[str, str]]:
        labels = match_labels(alert)
        labels["fingerprint"] = alert.fingerprint
        group_labels = {name: labels.get(name, "") for name in target.timing.group_by}
        digest = short_hash([target.route, *target.timing.group_by, *group_labels.values()])
        return group_key(target.channel, digest), group_labels

    # --- transitions ------------------------------------------------------------------------

    def dispatch(self, state: State, alert: AlertTransition, now_ms: int) -> list[Notification]:
        """Take one transition into account.

        Args:
            state: dispatcher state (read and written).
            alert: a ``firing`` or ``resolved`` transition.
            now_ms: processing time.

        Returns:
            Notifications to send now (a group with ``group_wait: 0s`` sends at once; others
            wait for :meth:`expire`).
        """
        index_key = alert_key(alert.fingerprint)
        index = state.get(index_key)
        if isinstance(index, AlertIndex) and alert.ts_ms <= index.ts_ms:
            logger.debug(
                "stale transition ignored fingerprint=%s state=%s ts_ms=%d last_ts_ms=%d",
                alert.fingerprint,
                alert.state,
                alert.ts_ms,
                index.ts_ms,
            )
            return []
        known_groups = index.groups if isinstance(index, AlertIndex) else ()
        self._update_inhibitions(state, alert)
        out: list[Notification] = []
        if alert.state == "resolved":
            for key in known_groups:
                out += self._add_to_group(state, key, alert, now_ms, None)
            state[index_key] = AlertIndex(
                (), "resolved", alert.ts_ms, now_ms + RESOLVED_TOMBSTONE_MS
            )
            return out
        keys: list[str] = []
        for target in self.route(alert):
            key, labels = self._group_for(alert, target)
            keys.append(key)
            out += self._add_to_group(state, key, alert, now_ms, (target, labels))
        for key in known_groups:  # fired again without a resolve: keep the old groups current
            if key not in keys and isinstance(state.get(key), GroupState):
                keys.append(key)
                out += self._add_to_group(state, key, alert, now_ms, None)
        state[index_key] = AlertIndex(tuple(keys), "firing", alert.ts_ms)
        return out

    def _update_inhibitions(self, state: State, alert: AlertTransition) -> None:
        if not self.config.inhibit_rules:
            return
        labels = match_labels(alert)
        for rule in self.config.inhibit_rules:
            if not matches_all(rule.source, labels):
                continue
            key = inhibit_key(rule, labels)
            current = state.get(key)
            sources = dict(current.sources) if isinstance(current, InhibitIndex) else {}
            if alert.state == "firing":
                sources[alert.fingerprint] = alert.ts_ms
            else:
                sources.pop(alert.fingerprint, None)
            if sources:
                state[key] = InhibitIndex(sources)
            elif key in state:
                del state[key]

    def _add_to_group(
        self,
        state: State,
        key: str,
        alert: AlertTransition,
        now_ms: int,
        create: tuple[Target, dict[str, str]] | None,
    ) -> list[Notification]:
        current = state.get(key)
        if isinstance(current, GroupState):
            group = current
        elif create is not None:
            target, labels = create
            settings = self.config.channel(target.channel)
            group = GroupState(
                channel=target.channel,
                route=target.route,
                labels=labels,
                group_wait_ms=target.timing.group_wait_ms,
                group_interval_ms=target.timing.group_interval_ms,
                repeat_interval_ms=target.timing.repeat_interval_ms,
                send_resolved=settings.send_resolved,
                mute_windows=target.timing.mute_windows,
            )
        else:
            return []  # the group was already emptied: nobody is waiting for this alert
        entries = dict(group.alerts)
        previous = entries.get(alert.fingerprint)
        notified = previous.notified if previous is not None else ""
        if previous is None and alert.state == "resolved":
            return []
        entries[alert.fingerprint] = GroupEntry(alert, notified)
        changed = previous is None or previous.alert.state != alert.state
        next_ms = group.next_ms
        if changed:
            if group.last_flush_ms is None:
                due = now_ms + group.group_wait_ms
            else:
                due = max(now_ms, group.last_flush_ms + group.group_interval_ms)
            next_ms = due if next_ms is None else min(next_ms, due)
        group = msgspec.structs.replace(group, alerts=entries, next_ms=next_ms)
        state[key] = group
        if next_ms is not None and next_ms <= now_ms:
            return self._flush(state, key, group, now_ms)
        return []

    # --- timers -----------------------------------------------------------------------------

    def expire(self, state: State, key: str, now_ms: int) -> list[Notification]:
        """Run what is due for ``key`` at ``now_ms``.

        Safe to call early, late or twice: a key that is not due (or gone) returns nothing.

        Returns:
            Notifications to send now.
        """
        value = state.get(key)
        if isinstance(value, GroupState):
            if value.next_ms is None or now_ms < value.next_ms:
                return []
            return self._flush(state, key, value, now_ms)
        if isinstance(value, RateState):
            if not value.suppressed or now_ms < value.window_start_ms + value.per_ms:
                return []
            del state[key]
            return [self._summary(value, key[2:], now_ms)]
        if (
            isinstance(value, AlertIndex)
            and value.expires_ms is not None
            and now_ms >= value.expires_ms
        ):
            del state[key]
        return []

    def _mute_end(self, group: GroupState, now_ms: int) -> int | None:
        """When none of the group's mute windows is active any more (None: not muted now)."""
        windows = [
            self.config.mute_windows[n] for n in group.mute_windows if n in self.config.mute_windows
        ]
        t = now_ms
        for _ in range(_MAX_MUTE_STEPS):
            ends = [end for w in windows if (end := w.end_after(t)) is not None]
            if not ends:
                return None if t == now_ms else t
            t = max(ends)
        return t

    def _suppression(
        self,
        state: State,
        alert: AlertTransition,
        silences: Sequence[ActiveSilence],
        now_ms: int,
    ) -> tuple[str, int | None, str] | None:
        """``("silenced", end, why)`` or ``("inhibited", None, why)`` or None; ``why`` names
        the silence or the inhibiting alert."""
        labels = match_labels(alert)
        applying = [s for s in silences if s.applies(labels, now_ms)]
        if applying:
            last = max(applying, key=lambda s: s.ends_at_ms)
            return "silenced", last.ends_at_ms, f"silence {last.id}"
        for rule in self.config.inhibit_rules:
            if not matches_all(rule.target, labels):
                continue
            sources = state.get(inhibit_key(rule, labels))
            others = (
                [fp for fp in sources.sources if fp != alert.fingerprint]
                if isinstance(sources, InhibitIndex)
                else []
            )
            if others:
                return "inhibited", None, f"inhibited by alert {others[0]}"
        return None

    def _flush(self, state: State, key: str, group: GroupState, now_ms: int) -> list[Notification]:
        mute_end = self._mute_end(group, now_ms)
        if mute_end is not None:
            self.stats.add(group.channel, "muted")
            windows = ",".join(group.mute_windows)
            muted = [e.alert for e in group.alerts.values()]
            self.suppressions.announce(group.channel, muted, f"mute window {windows}")
            state[key] = msgspec.structs.replace(group, next_ms=max(mute_end, now_ms + 1))
            return []
        silences = self.silences.silences(now_ms) if group.alerts else ()
        visible: list[GroupEntry] = []
        recheck: list[int] = []
        entries: dict[str, GroupEntry] = {}
        newly_resolved: list[GroupEntry] = []
        for fingerprint, entry in group.alerts.items():
            if entry.alert.state == "resolved":
                if entry.notified == "firing" and group.send_resolved:
                    newly_resolved.append(entry)
                continue  # resolved entries leave the group with this flush
            suppression = self._suppression(state, entry.alert, silences, now_ms)
            if suppression is not None:
                reason, until, why = suppression
                self.stats.add(group.channel, reason)
                self.suppressions.announce(group.channel, [entry.alert], why)
                # Re-check at the silence's end, and every group_interval in case a silence
                # is expired early or an inhibiting alert resolves.
                soon = now_ms + group.group_interval_ms
                recheck.append(min(until, soon) if until is not None else soon)
                entries[fingerprint] = entry
            else:
                visible.append(entry)
        new_firing = [e for e in visible if e.notified != "firing"]
        out: list[Notification] = []
        last_notified = group.last_notified_ms
        repeats = group.repeats
        last_flush = group.last_flush_ms
        covered: list[GroupEntry] = []
        kind: Kind | None = None
        extra = ""
        if new_firing or newly_resolved:
            covered = visible + newly_resolved
            kind = "digest" if len(covered) > 1 else covered[0].alert.state
            last_notified, repeats, last_flush = now_ms, 0, now_ms
        elif (
            visible
            and last_notified is not None
            and now_ms >= last_notified + group.repeat_interval_ms
        ):
            covered = visible
            kind = "repeat"
            repeats += 1
            extra = str(repeats)
            last_notified, last_flush = now_ms, now_ms
        for entry in visible:
            entries[entry.alert.fingerprint] = GroupEntry(entry.alert, "firing")
        if kind is not None:
            out += self._emit(state, group, kind, [e.alert for e in covered], extra, now_ms)
        if not entries:
            del state[key]
            return out
        candidates = list(recheck)
        if visible and last_notified is not None:
            candidates.append(last_notified + group.repeat_interval_ms)
        next_ms = max(min(candidates), now_ms + 1) if candidates else None
        state[key] = msgspec.structs.replace(
            group,
            alerts=entries,
            next_ms=next_ms,
            last_flush_ms=last_flush,
            last_notified_ms=last_notified,
            repeats=repeats,
        )
        return out

    # --- output -----------------------------------------------------------------------------

    def _emit(
        self,
        state: State,
        group: GroupState,
        kind: Kind,
        alerts: list[AlertTransition],
        extra: str,
        now_ms: int,
    ) -> list[Notification]:
        out: list[Notification] = []
        limit = self.config.channel(group.channel).rate_limit
        if limit is not None:
            allowed, summary = self._take_rate(state, group.channel, limit, kind, alerts, now_ms)
            if summary is not None:
                out.append(summary)
            if not allowed:
                self.stats.add(group.channel, "suppressed")
                self.suppressions.announce(group.channel, alerts, f"rate limit ({kind})")
                return out
        out.append(self._notification(group.channel, kind, alerts, extra, now_ms, group.labels))
        return out

    def _take_rate(
        self,
        state: State,
        channel: str,
        limit: tuple[int, int],
        kind: Kind,
        alerts: Iterable[AlertTransition],
        now_ms: int,
    ) -> tuple[bool, Notification | None]:
        """Count one notification against the channel's window: ``(allowed, summary of the
        previous window if it is due now)``."""
        most, per_ms = limit
        key = rate_key(channel)
        window_start = now_ms - now_ms % per_ms
        current = state.get(key)
        summary = None
        if not isinstance(current, RateState) or current.window_start_ms != window_start:
            if isinstance(current, RateState) and current.suppressed:
                summary = self._summary(current, channel, now_ms)
            current = RateState(window_start, per_ms)
        if current.sent < most:
            state[key] = msgspec.structs.replace(current, sent=current.sent + 1)
            return True, summary
        kinds = dict(current.kinds)
        kinds[kind] = kinds.get(kind, 0) + 1
        rules = dict(current.rules)
        for rule in dict.fromkeys(a.rule for a in alerts):
            rules[rule] = rules.get(rule, 0) + 1
        state[key] = msgspec.structs.replace(
            current, suppressed=current.suppressed + 1, kinds=kinds, rules=rules
        )
        return False, summary

    def _summary(self, window: RateState, channel: str, now_ms: int) -> Notification:
        title, body, fmt = self.renderer.render(
            channel,
            "suppressed-summary",
            [],
            suppressed=window.suppressed,
            suppressed_kinds=window.kinds,
            suppressed_rules=window.rules,
        )
        return Notification(
            id=notification_id(channel, "suppressed-summary", [], str(window.window_start_ms)),
            channel=channel,
            kind="suppressed-summary",
            alerts=(),
            title=title,
            body=body,
            format=fmt,
            notify_type="info",
            created_ms=now_ms,
            suppressed=window.suppressed,
        )

    def _notification(
        self,
        channel: str,
        kind: Kind,
        alerts: list[AlertTransition],
        extra: str,
        now_ms: int,
        group_labels: dict[str, str],
    ) -> Notification:
        alerts = sorted(
            alerts, key=lambda a: (a.state != "firing", a.rule, a.entity, a.fingerprint)
        )
        title, body, fmt = self.renderer.render(channel, kind, alerts, group_labels=group_labels)
        return Notification(
            id=notification_id(channel, kind, alerts, extra),
            channel=channel,
            kind=kind,
            alerts=tuple(alerts),
            title=title,
            body=body,
            format=fmt,
            notify_type=_notify_type(kind, alerts),
            created_ms=now_ms,
            group_labels=dict(group_labels),
        )
