"""A fleet: daemons on several machines whose desired state (per model, the active version
and the rollout) lives in etcd and changes on all of them together (a two-phase switch).

Runs in the daemon: :mod:`etcd_store` (etcd's v3 JSON gateway, through etcd3gw),
:mod:`keys` (the layout of the fleet's keys), :mod:`member` (this daemon's part: lease,
watch, prepare, apply, report) and :mod:`coordinator` (a change asked of this member).
"""
