"""Joining a fleet: what the composition root calls when the config has ``[fleet]``. It
builds the etcd store, this member and the fleet as the owner of the serving state, and
plugs them into the core's seams (state owner, the ``fleet`` op, a status section)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.config.fleet_section import FleetConfig
from hotswapd.errors import ConfigError
from hotswapd.fleet.coordinator import FleetOwner
from hotswapd.fleet.fleet_op import FleetGauges, fleet_op, link
from hotswapd.fleet.member import FleetMember

if TYPE_CHECKING:
    from hotswapd.core.registry import Registry
    from hotswapd.core.seams import Seams
    from hotswapd.core.switching import Switchboard


def join(config: FleetConfig, base_dir: Path | None, seams: Seams, registry: Registry, switchboard: Switchboard, metrics: Any) -> FleetMember:
    try:
        from hotswapd.fleet.etcd_store import EtcdStore

        store = EtcdStore(config, base_dir)
    except ImportError as exc:
        raise ConfigError(f"[fleet] needs the etcd client: pip install 'hotswap[fleet]' ({exc})") from exc
    member = FleetMember(config, store, registry, switchboard)
    seams.state_owner = FleetOwner(member, registry, switchboard)
    seams.add_op(fleet_op(member))
    seams.status_sections["fleet"] = lambda snap: link(member, snap.fleet_generation)
    metrics.register(FleetGauges(member, lambda: registry.published.current.fleet_generation))  # a prometheus_client CollectorRegistry
    return member
