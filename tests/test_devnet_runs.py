"""The devnet's once-per-run shortcuts in cairo-lang's VM (``ciro_devnet._cairo_runs``) check exactly what cairo-lang's
own code checks: a builtin segment with every input cell passes both, one missing an input cell fails both with
the same message, and unset output cells are verified by the same deduction calls."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starkware.cairo.lang.vm.builtin_runner import SimpleBuiltinRunner
from starkware.cairo.lang.vm.relocatable import RelocatableValue

import ciro_devnet.vm  # noqa: F401  (installs the shortcuts, as the devnet does)
from ciro_devnet._cairo_runs import original, security_checks


def _runner(builtin_segment: int, offsets: list[int], other: int = 50) -> Any:
    memory: dict[Any, int] = {RelocatableValue(builtin_segment, o): 7 for o in offsets}
    memory.update({RelocatableValue(0, o): 1 for o in range(other)})  # the program and other segments
    memory.update({RelocatableValue(builtin_segment + 1, o): 2 for o in range(other)})
    deduced: list[Any] = []
    vm = SimpleNamespace(validated_memory=memory, verify_auto_deductions_for_addr=deduced.append)
    return SimpleNamespace(vm_memory=memory, vm=vm, deduced=deduced)


def _builtin(segment: int) -> Any:
    b = SimpleBuiltinRunner.__new__(SimpleBuiltinRunner)
    b.name, b.cells_per_instance, b.n_input_cells = "pedersen", 3, 2
    b._base = RelocatableValue(segment, 0)
    return b


def _outcome(check: Any, offsets: list[int]) -> tuple[str | None, list[Any]]:
    runner = _runner(4, offsets)
    try:
        check(_builtin(4), runner)
    except AssertionError as exc:
        return str(exc), runner.deduced
    return None, runner.deduced


@pytest.mark.parametrize("offsets", [
    [], [0, 1, 2], [0, 1, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7],  # complete: the unset outputs (5, 8) are deduced
    [0, 2, 3, 4], [1], [0, 1, 4], [0, 1, 3, 4, 6, 10, 12],  # an input cell missing
    list(range(0, 90, 3)),  # too few cells for the instances they span
])
def test_the_builtin_check_matches_cairo_langs(offsets: list[int]) -> None:
    mine, theirs = _outcome(security_checks, offsets), _outcome(original("run_security_checks"), offsets)
    assert mine[0] == theirs[0] or (mine[0] and theirs[0] and mine[0].split(":")[0] == theirs[0].split(":")[0]
                                    and sorted(mine[0].split(":")[1]) == sorted(theirs[0].split(":")[1]))
    assert mine[1] == theirs[1]


def test_a_hint_source_is_compiled_once() -> None:
    from starkware.cairo.lang.vm.virtual_machine_base import VirtualMachineBase

    vm = VirtualMachineBase.__new__(VirtualMachineBase)
    first = vm.compile_hint("x = 1 + 2", "<hint0>", 0, 0)
    assert vm.compile_hint("x = 1 + 2", "<hint0>", 0, 0) is first
    scope: dict[str, int] = {}
    exec(first, scope)
    assert scope["x"] == 3
    for _ in range(2):  # a source that does not compile fails every time: nothing is kept for it
        with pytest.raises(Exception):  # noqa: B017 (cairo-lang raises its VmException, or fails building it)
            vm.compile_hint("x = = 1", "<hint1>", 1, 0)
