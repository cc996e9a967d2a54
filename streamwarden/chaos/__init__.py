"""Fault injection: bounded, loopback-only scenarios that break one part and count the damage.

``streamwarden chaos`` runs them (:mod:`streamwarden.cli_chaos`); :mod:`.runner` holds the
registry and :mod:`.harness` what the scenarios share: the worker scenarios run the alerting
workload of :mod:`.workload` and count notifications with :mod:`.notifications`; the producer
scenarios run simulators and producers through :mod:`.upstreams`. One module per scenario:

==================  =========================================================================
scenario            what breaks
==================  =========================================================================
worker-kill         the worker is SIGKILLed at random points and restarted (10x, 3x quick)
worker-takeover     one of two workers of a group is SIGKILLed; the other takes over
upstream-drop       every upstream server drops the connection every 50 messages
broker-outage       the embedded broker goes down and up while producers run
channel-outage      the notification channel answers 503 for a minute (10 s quick)
==================  =========================================================================

Each scenario starts everything it needs (its own embedded broker, simulators, workers, an
HTTP sink), stops by itself within a bound and stops everything it started, whatever happens.
"""

SCENARIO_NAMES: tuple[str, ...] = (
    "worker-kill",
    "worker-takeover",
    "upstream-drop",
    "broker-outage",
    "channel-outage",
)
"""In run order; the registry in :mod:`streamwarden.chaos.runner` has exactly these."""
