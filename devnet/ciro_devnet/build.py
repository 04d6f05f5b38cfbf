"""Compile one contract of a Cairo 2.1 crate to Sierra + CASM (the test crates use it).

`python -m ciro_devnet.build --crate tests/cairo/counter --contract ciro_test_counter::Counter` writes
`<crate>/compiled/<Name>.sierra.json` and `<Name>.casm.json`. Cairo 2.1.0's `starknet-compile` (fetched by
`make contracts` into contracts/.toolchain) makes the Sierra, cairo-lang's bundled `starknet-sierra-compile
--add-pythonic-hints` the CASM (the Python VM runs the pythonic hints). The Ciro contracts themselves, the account
and the UDC included, are built by contracts/build.py into contracts/compiled.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from .classes import sierra_compiler

REPO = Path(__file__).resolve().parents[2]
CAIRO_COMPILER = REPO / "contracts" / ".toolchain" / "cairo-2.1.0" / "bin" / "starknet-compile"


def compiled_dir() -> Path:
    """The committed Ciro contracts (CiroAccount and UniversalDeployer among them)."""
    from ciro.chain.artifacts import compiled_dir as ciro_compiled_dir

    return ciro_compiled_dir()


def compile_contract(
    crate_dir: Path, contract_path: str, out_dir: Path, name: str, cairo_compiler: Path = CAIRO_COMPILER
) -> tuple[Path, Path]:
    """Compile one contract of a Cairo crate to `<out_dir>/<name>.sierra.json` and `<name>.casm.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sierra_path = out_dir / f"{name}.sierra.json"
    casm_path = out_dir / f"{name}.casm.json"
    with tempfile.TemporaryDirectory(prefix="ciro-cairo-") as tmp:
        raw = Path(tmp) / "out.json"
        _run([str(cairo_compiler), str(crate_dir), "--contract-path", contract_path, str(raw)])
        sierra = json.loads(raw.read_text())
    sierra_path.write_text(json.dumps(sierra, indent=2) + "\n")
    casm = json.loads(_run([str(sierra_compiler()), "--add-pythonic-hints", str(sierra_path)]))
    casm_path.write_text(json.dumps(casm, indent=2) + "\n")
    return sierra_path, casm_path


def _run(command: list[str]) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--crate", type=Path, required=True, help="the crate folder (with cairo_project.toml)")
    parser.add_argument("--contract", action="append", required=True, help="crate::module::Contract (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default: <crate>/compiled)")
    parser.add_argument("--cairo-compiler", type=Path, default=CAIRO_COMPILER, help="Cairo 2.1 starknet-compile")
    args = parser.parse_args(argv)
    out = args.out or args.crate / "compiled"
    for path in args.contract:
        name = path.rsplit("::", 1)[-1]
        sierra, casm = compile_contract(args.crate, path, out, name, args.cairo_compiler)
        print(f"{name}: {sierra}, {casm.name}")


if __name__ == "__main__":
    main()
