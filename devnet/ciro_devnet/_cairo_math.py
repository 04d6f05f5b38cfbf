"""Faster field arithmetic for cairo-lang's Python Cairo VM, with the same results.

cairo-lang computes modular inverses with sympy's extended gcd and square roots mod the field prime with sympy's
Tonelli-Shanks over all roots (the Stark prime has 2-adicity 192, so that is slow). A profile of the devnet put
~20 % of a transaction in them: every EC operation of an account's signature check (the ec_op builtin, the
``random_ec_point`` hint) divides, and the VM divides to deduce operands. :func:`install` replaces them, for the
Stark prime only, with Python's built-in modular inverse and Cipolla's square root, returning exactly what the
originals return (tests/test_devnet_math.py compares them on random inputs); any other modulus goes to the original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .felts import FIELD_PRIME as PRIME

__all__ = ["PRIME", "div_mod", "install", "is_quad_residue", "sqrt"]

_HALF = (PRIME - 1) // 2
_originals: dict[str, Callable[..., Any]] = {}


def div_mod(n: int, m: int, p: int) -> int:
    """x < p with (m * x) % p == n; like cairo-lang's, an AssertionError when m has no inverse."""
    if p != PRIME:
        return int(_originals["div_mod"](n, m, p))
    try:
        return n * pow(m, -1, p) % p
    except ValueError:
        raise AssertionError(f"{m} has no inverse modulo the field prime") from None


def is_quad_residue(n: int, p: int) -> bool:
    if p != PRIME:
        return bool(_originals["is_quad_residue"](n, p))
    n %= p
    return n == 0 or pow(n, _HALF, p) == 1


def sqrt(n: int, p: int) -> int:
    """The smaller square root of n mod the prime (Cipolla); ValueError when there is none, as cairo-lang's."""
    if p != PRIME:
        return int(_originals["sqrt"](n, p))
    n %= p
    if n == 0:
        return 0
    if pow(n, _HALF, p) != 1:
        raise ValueError(f"{n} is not a square modulo the field prime")
    a = 0
    while pow((a * a - n) % p, _HALF, p) != p - 1:  # a non-residue a^2 - n: about two tries on average
        a += 1
    w = (a * a - n) % p
    # (a + sqrt(w)) ** ((p + 1) / 2) in F_p[x] / (x^2 - w) is a root of n, with no x term.
    r0, r1, b0, b1, e = 1, 0, a, 1, (p + 1) // 2
    while e:
        if e & 1:
            r0, r1 = (r0 * b0 + r1 * b1 * w) % p, (r0 * b1 + r1 * b0) % p
        b0, b1 = (b0 * b0 + b1 * b1 * w) % p, 2 * b0 * b1 % p
        e >>= 1
    return min(r0, p - r0)


def install() -> None:
    """Patch cairo-lang's math_utils (and the VM core's imported ``div_mod``) once."""
    import starkware.cairo.lang.vm.vm_core as vm_core
    import starkware.python.math_utils as math_utils

    if _originals:
        return
    for name, fast in (("div_mod", div_mod), ("is_quad_residue", is_quad_residue), ("sqrt", sqrt)):
        _originals[name] = getattr(math_utils, name)
        setattr(math_utils, name, fast)
    vm_core.div_mod = div_mod
