"""The alert lifecycle after the rule engine: routing, grouping, repeats, silences, mute
windows, inhibition and rate limits, turning ``alerts.v1`` transitions into notification
intents. Plain Python with explicit ``*_ms`` times; nothing here imports faust, nor
:mod:`pipeline.notify` (delivery), which builds on this package: one direction.

Modules, in the order an alert meets them::

    config.py     channels.yaml schema and loader (file:line errors), routing precedence
    matchers.py   label=value, label!=value, label=~regex, label!~regex
    dispatch.py   Dispatcher: dispatch(state, alert, now_ms) and expire(state, key, now_ms)
    silences.py   the silences file; add_silence / list_silences / expire_silence
    mute.py       recurring mute windows in an IANA time zone
    model.py      Notification, state values and their msgpack encoding, deadline(), ids
    timers.py     DeadlineIndex / TrackedState / run_due: find due keys without scanning
    stats.py      per-channel counters (sent, failed, retried, suppressed, ...)
    templates.py  Renderer: titles and bodies per channel and format (Jinja2 sandbox)

How an agent drives it (one partition: groups, inhibition and rate limits span alerts)::

    state = TrackedState(table_view, index)        # index.rebuild(...) once at start-up
    for alert in alerts:                           # each alerts.v1 record
        for n in dispatcher.dispatch(state, alert, now_ms()):
            queue.submit(n)                        # DeliveryQueue: off the critical path
    every second:
        for n in run_due(dispatcher, state, now_ms()):
            queue.submit(n)
"""
