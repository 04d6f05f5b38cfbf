"""The one entry-point loader (ciro.plugins), with real entry points of a distribution put on sys.path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciro import ConfigError
from ciro.plugins import load_entry_point, load_entry_points

GROUP = "ciro.test_plugins"


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[None]:
    dist = tmp_path / "ciro_fake_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ciro-fake-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{GROUP}]\ngood = json:dumps\nmissing = ciro_no_such_module_xyz:thing\nboom = ciro_fake_boom:thing\n")
    (tmp_path / "ciro_fake_boom.py").write_text("raise RuntimeError('broken at import')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ciro_fake_boom", None)


def test_a_group_loads_what_loads_and_reports_the_rest(plugins: None) -> None:
    import json

    warnings: list[str] = []
    loaded = load_entry_points(GROUP, warn=warnings.append)
    assert loaded == [("good", json.dumps)]
    assert len(warnings) == 2
    missing = next(w for w in warnings if "'missing'" in w)
    assert "is not installed" in missing and "pip install 'ciro-network[missing]'" in missing
    boom = next(w for w in warnings if "'boom'" in w)
    assert "could not be loaded: RuntimeError: broken at import" in boom
    assert load_entry_points(GROUP, warn=warnings.append, skip=lambda name: name != "good") == loaded


def test_one_plugin_by_name_is_an_error_when_it_does_not_load(plugins: None) -> None:
    import json

    assert load_entry_point(GROUP, "good") is json.dumps
    assert load_entry_point(GROUP, "absent") is None
    with pytest.raises(ConfigError, match=r"'missing' plugin .* is not installed"):
        load_entry_point(GROUP, "missing")
