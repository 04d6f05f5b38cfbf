"""The devnet's faster field arithmetic (ciro_devnet._cairo_math) returns exactly what cairo-lang's does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ciro_devnet.vm  # noqa: F401  (installs the fast functions)
from ciro_devnet import _cairo_math as fast

P = fast.PRIME
felts = st.integers(min_value=0, max_value=P - 1)


def test_installed_in_cairo_lang() -> None:
    import starkware.cairo.lang.vm.vm_core as vm_core
    import starkware.python.math_utils as math_utils

    assert math_utils.div_mod is fast.div_mod and vm_core.div_mod is fast.div_mod
    assert math_utils.sqrt is fast.sqrt and math_utils.is_quad_residue is fast.is_quad_residue


@settings(max_examples=200, deadline=None)
@given(n=felts, m=felts)
def test_same_results_as_cairo_lang(n: int, m: int) -> None:
    original = fast._originals
    if m % P == 0:
        with pytest.raises(AssertionError):
            fast.div_mod(n, m, P)
        with pytest.raises(AssertionError):
            original["div_mod"](n, m, P)
    else:
        assert fast.div_mod(n, m, P) == original["div_mod"](n, m, P)
    square = n * n % P  # a residue for sure, and n itself half the time
    for value in (n, square):
        assert fast.is_quad_residue(value, P) == original["is_quad_residue"](value, P)
        if fast.is_quad_residue(value, P):
            root = fast.sqrt(value, P)
            assert root == original["sqrt"](value, P) and root * root % P == value and root <= P - root
        else:
            with pytest.raises(ValueError):
                fast.sqrt(value, P)
            with pytest.raises(ValueError):
                original["sqrt"](value, P)


def test_other_moduli_go_to_cairo_lang() -> None:
    assert fast.div_mod(3, 4, 7) == 6 and fast.sqrt(2, 7) == 3 and not fast.is_quad_residue(3, 7)
