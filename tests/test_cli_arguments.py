"""`--ray` takes an optional address: alone it means a local Ray (hotswap_cli/arguments.py)."""

from __future__ import annotations

import pytest

from hotswap_cli.arguments import fill_optional_values


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (["encode", "-i", "a", "-o", "b.parquet", "--ray"], ["encode", "-i", "a", "-o", "b.parquet", "--ray", "local"]),
        (["encode", "--ray", "--actors", "2"], ["encode", "--ray", "local", "--actors", "2"]),
        (["encode", "--ray", "auto"], ["encode", "--ray", "auto"]),
        (["encode", "--ray=ray://head:10001"], ["encode", "--ray=ray://head:10001"]),
        (["encode", "--", "--ray"], ["encode", "--", "--ray"]),  # after --, a text
    ],
)
def test_ray_alone_means_a_local_ray(given: list[str], parsed: list[str]) -> None:
    assert fill_optional_values(given) == parsed
