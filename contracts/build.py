#!/usr/bin/env python3
"""Build the Ciro Starknet contracts: Cairo 2.1 -> Sierra -> CASM, and a manifest of their class hashes.

    python contracts/build.py [--out DIR] [--check]

Writes `<out>/<Name>.sierra.json`, `<out>/<Name>.casm.json` and `<out>/manifest.json` (default out:
`contracts/compiled`). The Sierra comes from Cairo 2.1.0's `starknet-compile` (fetched into
`contracts/.toolchain/cairo-2.1.0` from the cairo-lang 0.12.3 sdist when missing), the CASM from the
`starknet-sierra-compile` bundled with the installed cairo-lang, with `--add-pythonic-hints` (the hints the Python
Cairo VM runs). The same sources and compilers give the same bytes. `--check` builds into a temporary folder and
compares with the committed output: it prints every differing file and exits 1 on any difference.

The manifest maps each contract to its class hash (Starknet's Sierra class hash, over the ABI as starknet-py
serialises it when it declares the file), its compiled class hash (the Poseidon one) and its source.
CiroAccount and UniversalDeployer come from the separate crate `contracts/account` and are skipped, with a note,
while that crate is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parent
REPO = CONTRACTS_DIR.parent
COMPILED_DIR = CONTRACTS_DIR / "compiled"
ACCOUNT_CRATE = CONTRACTS_DIR / "account"
MANIFEST = "manifest.json"

TOOLCHAIN = CONTRACTS_DIR / ".toolchain" / "cairo-2.1.0"
# Cairo 2.1.0 (compiler binaries and corelib) ships inside the cairo-lang 0.12.3 sdist, in this folder.
SDIST_REQUIREMENT = "cairo-lang==0.12.3"
SDIST_COMPILER_DIR = "cairo-lang-0.12.3/starkware/starknet/compiler/v1/sierra-compiler-major-1/"


@dataclass(frozen=True)
class Contract:
    """One contract of a Cairo crate whose crate root is `<crate>/src`."""

    name: str
    crate: Path
    path: str  # its path in the crate, e.g. ciro::token::CiroToken

    @property
    def source(self) -> Path:
        """The file that defines the contract module (`ciro::token::CiroToken` -> `src/token.cairo`)."""
        modules = self.path.split("::")[1:-1]
        return self.crate.joinpath("src", *modules[:-1], f"{modules[-1]}.cairo") if modules else self.crate / "src"


CIRO_CONTRACTS = (
    Contract("CiroToken", CONTRACTS_DIR, "ciro::token::CiroToken"),
    Contract("CDCPool", CONTRACTS_DIR, "ciro::pool::CDCPool"),
    Contract("JobManager", CONTRACTS_DIR, "ciro::job_manager::JobManager"),
    Contract("CiroLedger", CONTRACTS_DIR, "ciro::ledger::CiroLedger"),
)
ACCOUNT_CONTRACTS = (
    Contract("CiroAccount", ACCOUNT_CRATE, "ciro_account::account::CiroAccount"),
    Contract("UniversalDeployer", ACCOUNT_CRATE, "ciro_account::udc::UniversalDeployer"),
)


class BuildError(RuntimeError):
    """A compiler or the toolchain fetch failed."""


def contracts() -> list[Contract]:
    """The contracts to build: Ciro's, and the account crate's when it exists."""
    found = list(CIRO_CONTRACTS)
    if (ACCOUNT_CRATE / "cairo_project.toml").is_file():
        found.extend(ACCOUNT_CONTRACTS)
    else:
        names = ", ".join(c.name for c in ACCOUNT_CONTRACTS)
        print(f"note: {_rel(ACCOUNT_CRATE)}/cairo_project.toml not found; skipping {names}")
    return found


# ----------------------------------------------------------------------------------------------------------------
# Toolchain
# ----------------------------------------------------------------------------------------------------------------


def cairo_compiler(toolchain: Path = TOOLCHAIN) -> Path:
    """Cairo 2.1.0's `starknet-compile`, fetched first if the toolchain is missing."""
    binary = toolchain / "bin" / "starknet-compile"
    if not binary.is_file():
        fetch_toolchain(toolchain)
    return binary


def fetch_toolchain(dest: Path = TOOLCHAIN) -> None:
    """Download the cairo-lang 0.12.3 sdist with pip and extract its Cairo 2.1.0 compiler folder into `dest`."""
    print(f"fetching the Cairo 2.1.0 compiler ({SDIST_REQUIREMENT} sdist) into {_rel(dest)}")
    with tempfile.TemporaryDirectory(prefix="ciro-cairo-sdist-") as tmp:
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", tmp]
        _run([*download, SDIST_REQUIREMENT])
        archives = sorted(Path(tmp).glob("cairo-lang-*"))
        if not archives:
            raise BuildError(f"pip download {SDIST_REQUIREMENT} left no sdist in {tmp}")
        staging = Path(tmp) / "toolchain"
        _extract_folder(archives[0], SDIST_COMPILER_DIR, staging)
        if not (staging / "bin" / "starknet-compile").is_file():
            raise BuildError(f"{archives[0].name} has no {SDIST_COMPILER_DIR}bin/starknet-compile")
        for binary in (staging / "bin").iterdir():
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(dest))


def _extract_folder(archive: Path, prefix: str, dest: Path) -> None:
    """Copy the files under `prefix` in a .zip or .tar.gz archive to `dest` (paths relative to `prefix`)."""
    members: list[tuple[str, bytes]] = []
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            members = [(n, zf.read(n)) for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.startswith(prefix):
                    handle = tf.extractfile(member)
                    members.append((member.name, handle.read() if handle else b""))
    for name, data in members:
        relative = Path(name[len(prefix) :])
        if relative.is_absolute() or ".." in relative.parts:
            raise BuildError(f"unsafe path in {archive.name}: {name}")
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def sierra_compiler() -> Path:
    """The `starknet-sierra-compile` bundled with the installed cairo-lang (found without importing it)."""
    spec = importlib.util.find_spec("starkware")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("cairo-lang is not installed in this Python (the chain extra: pip install -e '.[chain]')")
    root = Path(next(iter(spec.submodule_search_locations)))
    binary = root / "starknet" / "compiler" / "v1" / "sierra-compiler-major-1" / "bin" / "starknet-sierra-compile"
    if not binary.is_file():
        raise BuildError(f"{binary} not found")
    return binary


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


def compile_contract(contract: Contract, out_dir: Path, cairo: Path, sierra_to_casm: Path) -> tuple[Path, Path]:
    """Compile one contract to `<out_dir>/<name>.sierra.json` and `<out_dir>/<name>.casm.json`."""
    sierra_path = out_dir / f"{contract.name}.sierra.json"
    casm_path = out_dir / f"{contract.name}.casm.json"
    with tempfile.TemporaryDirectory(prefix="ciro-cairo-") as tmp:
        raw_sierra = Path(tmp) / "sierra.json"
        _run([str(cairo), str(contract.crate), "--contract-path", contract.path, str(raw_sierra)], contract.name)
        sierra = json.loads(raw_sierra.read_text())
        _write_json(sierra_path, sierra)
        raw_casm = Path(tmp) / "casm.json"
        _run([str(sierra_to_casm), "--add-pythonic-hints", str(sierra_path), str(raw_casm)], contract.name)
        _write_json(casm_path, json.loads(raw_casm.read_text()))
    return sierra_path, casm_path


def class_hashes(sierra_path: Path, casm_path: Path) -> tuple[int, int]:
    """(Sierra class hash, Poseidon compiled class hash) of compiled files, as starknet-py declares them."""
    from starknet_py.common import create_casm_class, create_sierra_compiled_contract
    from starknet_py.hash.casm_class_hash import compute_casm_class_hash
    from starknet_py.hash.hash_method import HashMethod
    from starknet_py.hash.sierra_class_hash import compute_sierra_class_hash

    sierra = create_sierra_compiled_contract(sierra_path.read_text())
    casm = create_casm_class(casm_path.read_text())
    return compute_sierra_class_hash(sierra), compute_casm_class_hash(casm, hash_method=HashMethod.POSEIDON)


def build(out_dir: Path, quiet: bool = False) -> dict[str, dict[str, str]]:
    """Compile every contract into `out_dir` and write its manifest; returns the manifest."""
    cairo = cairo_compiler()
    sierra_to_casm = sierra_compiler()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for contract in contracts():
        started = time.monotonic()
        sierra_path, casm_path = compile_contract(contract, out_dir, cairo, sierra_to_casm)
        class_hash, compiled_class_hash = class_hashes(sierra_path, casm_path)
        manifest[contract.name] = {
            "contract_path": contract.path,
            "source": _rel(contract.source),
            "sierra": sierra_path.name,
            "casm": casm_path.name,
            "sierra_class_hash": hex(class_hash),
            "compiled_class_hash": hex(compiled_class_hash),
        }
        if not quiet:
            print(f"{contract.name}: class hash {hex(class_hash)} ({time.monotonic() - started:.1f} s)")
    _write_json(out_dir / MANIFEST, manifest, sort_keys=True)
    return manifest


def check(committed: Path) -> list[str]:
    """Build into a temporary folder; returns the files that differ from `committed` (empty when identical)."""
    with tempfile.TemporaryDirectory(prefix="ciro-contracts-check-") as tmp:
        fresh = Path(tmp)
        build(fresh, quiet=True)
        expected = {p.name: p.read_bytes() for p in fresh.iterdir() if p.is_file()}
    present = {p.name: p for p in committed.glob("*.json")} if committed.is_dir() else {}
    differing = []
    for name in sorted(expected.keys() | present.keys()):
        if name not in present:
            differing.append(f"{name}: missing from {_rel(committed)}")
        elif name not in expected:
            differing.append(f"{name}: stale (not produced by the build)")
        elif present[name].read_bytes() != expected[name]:
            differing.append(f"{name}: differs from a fresh build")
    return differing


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: object, sort_keys: bool = False) -> None:
    # The compilers' own key order is kept (it is deterministic, and the class hash covers the ABI text).
    buffer = io.StringIO()
    json.dump(data, buffer, indent=2, sort_keys=sort_keys, ensure_ascii=True)
    buffer.write("\n")
    path.write_text(buffer.getvalue())


def _run(command: list[str], what: str = "") -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    label = f"{what}: " if what else ""
    if proc.returncode != 0:
        raise BuildError(f"{label}{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    if proc.stderr.strip():
        print(f"{label}{Path(command[0]).name}: {proc.stderr.strip()}", file=sys.stderr)
    return proc.stdout


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=COMPILED_DIR, help="output folder (default: contracts/compiled)")
    parser.add_argument(
        "--check", action="store_true", help="build into a temporary folder, compare with --out, exit 1 on a difference"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.check:
            differing = check(args.out)
            for line in differing:
                print(line)
            if differing:
                print(f"{_rel(args.out)} is out of date: run python contracts/build.py")
                return 1
            print(f"{_rel(args.out)} is up to date ({time.monotonic() - started:.1f} s)")
            return 0
        build(args.out)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {_rel(args.out)} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
