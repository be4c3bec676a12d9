"""The fleet's deployment files (issue 31) hold what they say: the compose file names three
members, etcd and a balancer, and the member config in it and in the Kubernetes manifest is
one the daemon accepts. (No container runtime runs them here: see docs/fleets.md.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from hotswapd.config.schema import Config
from tests.daemons import REPO

DEPLOY = REPO / "deploy"


def test_the_compose_file_runs_etcd_three_members_and_a_balancer_on_the_member_config() -> None:
    compose = yaml.safe_load((DEPLOY / "fleet" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"etcd", "member-1", "member-2", "member-3", "balancer"}
    assert {services[f"member-{i}"]["hostname"] for i in (1, 2, 3)} == {"member-1", "member-2", "member-3"}
    config = Config.model_validate(tomllib.loads((DEPLOY / "fleet" / "member.toml").read_text()))
    assert config.fleet is not None and config.fleet.etcd == ["http://etcd:2379"]
    upstreams = (DEPLOY / "fleet" / "nginx.conf").read_text()
    assert all(f"server member-{i}:8080" in upstreams for i in (1, 2, 3))
    assert config.http.listen == "0.0.0.0:8080" and "localhost" in config.http.allowed_hosts  # the Host nginx sends


def test_the_kubernetes_manifest_mounts_a_member_config_the_daemon_accepts(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "hotswap-fleet.yaml").read_text()))
    kinds = {document["kind"]: document for document in documents}
    assert set(kinds) == {"ConfigMap", "Deployment", "Service"}
    config = Config.model_validate(tomllib.loads(kinds["ConfigMap"]["data"]["member.toml"]))
    assert config.fleet is not None and config.fleet.name == "search-prod"
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"
    assert kinds["Deployment"]["spec"]["replicas"] == 3
