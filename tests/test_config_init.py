"""`hs config init`: the starter config, which is also what the daemon serves with no file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hotswapd.backends import backend_names
from hotswapd.config.schema import builtin_default, load_config, parse_config, starter_text
from tests.conftest import run_hs
from tests.daemons import REPO


def test_the_built_in_default_is_the_starter_with_two_versions_to_switch_between() -> None:
    served = builtin_default()
    assert served == parse_config(tomllib.loads(starter_text()))
    versions = served.models["minilm"].versions
    assert set(versions) == {"v1", "v2"} and served.models["minilm"].active == "v1"
    assert (versions["v1"].backend, versions["v2"].backend) == ("sentence-transformers", "onnx")
    assert versions["v2"].compatible_with == "v1" and versions["v1"].preload and not versions["v2"].preload


def test_config_example_is_the_starter_and_names_only_real_backends() -> None:
    example = (REPO / "config.example.toml").read_text()
    assert example == starter_text(), "config.example.toml is generated: hs config init --stdout > config.example.toml"
    load_config(REPO / "config.example.toml")
    named = set(__import__("re").findall(r'"([a-z-]+)"', example[example.index("# Which library runs the model."):example.index("backend = ")]))
    assert named and named <= set(backend_names()) | {"ensemble"}, named - set(backend_names())


def test_init_writes_the_starter_and_never_overwrites(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config-home")}
    done = run_hs("config", "init", env=env)
    target = tmp_path / "config-home" / "hotswapd" / "config.toml"
    assert done.returncode == 0 and target.read_text() == starter_text(), done.stderr
    assert b"hs switch minilm v2" in done.stdout
    assert run_hs("config", "validate", env=env).stdout.endswith(b"ok (1 model, 2 versions)\n")
    target.write_text("# mine\n")
    again = run_hs("config", "init", env=env)
    assert again.returncode == 2 and target.read_text() == "# mine\n"
    assert again.stderr.decode().splitlines() == [f"hs: error: {target} already exists (a file); it was left as it is (hs config init --stdout prints the starter)"]
    assert run_hs("config", "init", "--stdout", env=env).stdout.decode() == starter_text()
