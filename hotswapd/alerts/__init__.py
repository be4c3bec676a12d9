"""Alerts: what an operator must hear about without watching the log.

On an auto-rollback, a failed load, a rejected config or state file, an eviction under
memory pressure, or a refused corpus, the daemon runs the configured hooks: ``[alerts]
command = [...]`` (argv, never a shell string; the event as JSON on stdin) and/or
``webhook = "https://..."`` (a JSON POST with a timeout and retries). Hooks run on their own
thread from a bounded queue: serving never waits on them, and a full queue drops the alert
with a log line rather than grow.

- :mod:`settings`: the ``[alerts]`` config section.
- :mod:`deliver`: running a command, posting to a webhook.
- :mod:`dispatch`: the queue, the thread, and which events alert.
"""
