"""Persistence of a devnet in a folder, updated after each block:

- `blocks.jsonl`: one line per block, with its transactions and receipts (appended, fsynced);
- `state.json`: the state after the last block (storage, nonces, contracts, declared classes), the predeployed
  accounts, the clock offset and the number of blocks it covers (rewritten atomically after the append);
- `classes/<class hash>.json`: each declared class, Sierra and CASM (written once).

A crash between the append and the rewrite leaves one line too many; loading drops it (that block is lost, the
rest stays consistent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .classes import ContractClassArtifact

FORMAT = 1


class ChainFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "state.json"
        self.blocks_file = root / "blocks.jsonl"
        self.classes_dir = root / "classes"

    def load(self) -> dict[str, Any] | None:
        """The saved chain: the state.json fields plus "blocks" (the blocks.jsonl lines) and "classes"
        (artifacts by class hash); None when the folder holds no chain."""
        if not self.state_file.exists():
            return None
        data = dict(orjson.loads(self.state_file.read_bytes()))
        if data.get("format") != FORMAT:
            raise ValueError(f"{self.state_file}: unknown format {data.get('format')!r}")
        lines = self.blocks_file.read_bytes().splitlines() if self.blocks_file.exists() else []
        count = data["block_count"]
        if len(lines) < count:
            raise ValueError(f"{self.blocks_file}: {len(lines)} blocks, {self.state_file} expects {count}")
        if len(lines) > count:  # a block appended but never committed to state.json
            _write_atomic(self.blocks_file, b"".join(line + b"\n" for line in lines[:count]))
        data["blocks"] = [orjson.loads(line) for line in lines[:count]]
        classes = {}
        for class_hash in data["state"]["compiled_class_hashes"]:
            artifact = ContractClassArtifact.from_json(orjson.loads(self._class_file(int(class_hash, 16)).read_bytes()))
            classes[artifact.class_hash] = artifact
        data["classes"] = classes
        return data

    def append_block(self, block: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.blocks_file, "ab") as f:
            f.write(orjson.dumps(block) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def save_state(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_file, orjson.dumps({"format": FORMAT, **data}))

    def save_class(self, artifact: ContractClassArtifact) -> None:
        path = self._class_file(artifact.class_hash)
        if not path.exists():
            self.classes_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, orjson.dumps(artifact.to_json()))

    def _class_file(self, class_hash: int) -> Path:
        return self.classes_dir / f"{class_hash:#066x}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
