"""A fleet: daemons on several machines whose desired state (per model, the active version
and the rollout) lives in etcd and changes on all of them together (a two-phase switch).

Runs in the daemon: :mod:`etcd_store` (etcd's v3 JSON gateway, through etcd3gw),
:mod:`state` (the fleet's keys and records, read as hostile bytes), :mod:`member` (this
daemon's part: lease, watch, answering proposals, applying commits, reports),
:mod:`coordinator` (a change asked of this member, agreed with the others), :mod:`fleet_op`
(``hs fleet status``, the status line, gauges) and :mod:`joining` (what the composition
root calls to plug it into the core's seams).
"""
