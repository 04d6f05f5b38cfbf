"""Felt helpers: hex formatting, short strings, revert reasons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

FIELD_PRIME = 2**251 + 17 * 2**192 + 1


def to_hex(value: int) -> str:
    """The RPC form of a felt: lower-case hex, no leading zeros."""
    return hex(value)


def parse_felt(value: object) -> int:
    """A felt from its RPC form (hex string) or an int; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a felt: {value!r}")
    if isinstance(value, int):
        felt = value
    elif isinstance(value, str) and value.lower().startswith("0x"):
        felt = int(value, 16)
    elif isinstance(value, str) and value.isdigit():
        felt = int(value)
    else:
        raise ValueError(f"not a felt: {value!r}")
    if not 0 <= felt < FIELD_PRIME:
        raise ValueError(f"felt out of range: {value!r}")
    return felt


def parse_felts(values: Iterable[object]) -> list[int]:
    return [parse_felt(v) for v in values]


def encode_short_string(text: str) -> int:
    data = text.encode("ascii")
    if len(data) > 31:
        raise ValueError(f"short string longer than 31 characters: {text!r}")
    return int.from_bytes(data, "big")


def decode_short_string(felt: int) -> str | None:
    """The text of a felt that holds printable ASCII (a Cairo short string), else None."""
    if felt <= 0 or felt.bit_length() > 248:
        return None
    data = felt.to_bytes((felt.bit_length() + 7) // 8, "big")
    if all(32 <= b < 127 for b in data):
        return data.decode("ascii")
    return None


def describe_felts(felts: Sequence[int]) -> str:
    """`0x.. ('text'), 0x..`: each felt in hex, with its text where it reads as a short string."""
    parts = []
    for felt in felts:
        text = decode_short_string(felt)
        parts.append(f"{to_hex(felt)} ('{text}')" if text is not None else to_hex(felt))
    return ", ".join(parts)


def panic_text(felts: Sequence[int]) -> str:
    """The panic data as plain text, e.g. 'Account: invalid signature'; hex where a felt is not text."""
    texts = [decode_short_string(felt) or to_hex(felt) for felt in felts]
    return ", ".join(texts)
