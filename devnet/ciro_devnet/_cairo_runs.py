"""Two things cairo-lang's Python Cairo VM repeats for every entry-point run, done once instead, same results.

A profile of the devnet deploying the Ciro contracts (2026-12-07) found, besides the Cairo steps themselves:

- every run compiles each hint's Python source again (``VirtualMachineBase.compile_hint``: ~14,000 ``compile``
  calls for 30 transactions); the code object of one source is the same every time, so it is kept;
- the end-of-run security check of each builtin (``SimpleBuiltinRunner.run_security_checks``) walks the run's
  whole memory, the loaded program included, once per builtin (a Starknet run declares about ten) to find that
  builtin's cells; here the memory is walked once per run and its offsets kept per segment.

:func:`install` patches both. The checks themselves are unchanged: the same cells must be present (an
``AssertionError`` naming the builtin and the missing offsets otherwise) and the same output cells are verified by
auto-deduction. tests/test_devnet_runs.py compares the patched check with cairo-lang's own on complete and
incomplete builtin segments.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from types import CodeType
from typing import Any

__all__ = ["install", "security_checks"]

_originals: dict[str, Callable[..., Any]] = {}
_compiled: dict[tuple[str, str], CodeType] = {}


def _compile_hint(self: Any, source: str, filename: str, hint_index: int, pc: Any) -> CodeType:
    key = (source, filename)
    code = _compiled.get(key)
    if code is None:  # a source that does not compile raises from the original, every time, and is not kept
        code = _compiled[key] = _originals["compile_hint"](self, source, filename, hint_index, pc)
    return code


def _offsets(runner: Any) -> dict[int, set[int]]:
    """The offsets of the run's memory cells per segment index, computed once for as long as memory does not grow."""
    from starkware.cairo.lang.vm.relocatable import RelocatableValue

    memory = runner.vm_memory
    kept = getattr(runner, "_ciro_offsets", None)
    if kept is not None and kept[0] == len(memory):
        return kept[1]
    by_segment: dict[int, set[int]] = defaultdict(set)
    for addr in memory:
        if isinstance(addr, RelocatableValue):
            by_segment[addr.segment_index].add(addr.offset)
    runner._ciro_offsets = (len(memory), by_segment)
    return by_segment


def security_checks(self: Any, runner: Any) -> None:
    """A simple builtin's end-of-run check: every input cell of each instance it was given is set, and its unset
    output cells agree with the builtin's deduction."""
    offsets = _offsets(runner).get(self.base.segment_index, set())
    per, inputs = self.cells_per_instance, self.n_input_cells
    instances = max(offsets) // per + 1 if offsets else 0
    assert instances <= len(offsets) // inputs, f"Missing memory cells for {self.name}."
    missing = [per * i + j for i in range(instances) for j in range(inputs) if per * i + j not in offsets]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + ("..." if len(missing) > 20 else ".")
        raise AssertionError(f"Missing memory cells for {self.name}: {shown}")
    for i in range(instances):
        for j in range(inputs, per):
            addr = self.base + (per * i + j)
            if runner.vm.validated_memory.get(addr) is None:
                runner.vm.verify_auto_deductions_for_addr(addr)


def install() -> None:
    from starkware.cairo.lang.vm.builtin_runner import SimpleBuiltinRunner
    from starkware.cairo.lang.vm.virtual_machine_base import VirtualMachineBase

    if _originals:
        return
    _originals["compile_hint"] = VirtualMachineBase.compile_hint
    _originals["run_security_checks"] = SimpleBuiltinRunner.run_security_checks
    VirtualMachineBase.compile_hint = _compile_hint
    SimpleBuiltinRunner.run_security_checks = security_checks


def original(name: str) -> Callable[..., Any]:
    """cairo-lang's own function that :func:`install` replaced (for the tests)."""
    return _originals[name]
