"""The committed Starknet contract artifacts (contracts/compiled) are what the Cairo sources compile to."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "contracts" / "compiled"
HEX = re.compile(r"^0x[0-9a-f]+$")


@pytest.mark.timeout(600)
def test_build_check_matches_committed_artifacts() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "contracts" / "build.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=590,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifest_lists_the_ciro_contracts_with_class_hashes() -> None:
    manifest = json.loads((COMPILED / "manifest.json").read_text())
    for name in ("CiroToken", "CDCPool", "JobManager", "CiroLedger"):
        entry = manifest[name]
        assert HEX.match(entry["sierra_class_hash"]), entry
        assert HEX.match(entry["compiled_class_hash"]), entry
        assert (REPO / entry["source"]).is_file(), entry
        assert (COMPILED / f"{name}.sierra.json").is_file()
        assert (COMPILED / f"{name}.casm.json").is_file()
