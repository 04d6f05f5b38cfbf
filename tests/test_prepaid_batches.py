"""The settler's check of a worker batch before CiroLedger pays it whole (``prepaid.batch_fault``), on receipts
signed with real keys: a worker who signs a total above its leaves' prices, a size it did not fill, or leaves that
do not hash to its root would make the ledger refuse the whole settlement transaction. And the ``x-ciro-spend``
header's wire format (``ciro.chain.ledger``), property-tested: it round-trips, and anything malformed is an
InputError naming the header."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from ciro.chain.ledger import SpendAuthorization, encode_spend_header, parse_spend_header
from ciro.errors import InputError
from ciro.identity import Identity
from ciro.receipts import JobLeaf, Receipt, batch_message, sign_batch
from ciro_ray.prepaid import batch_fault, settle_rounds

PRICE = 10**15
CLIENT = "0x" + "ab" * 20


def _jobs(n: int, price: int = PRICE) -> list[JobLeaf]:
    return [JobLeaf(f"{i:032x}", "11" * 32, f"{i + 1:064x}", f"{i + 2:064x}", "receipt", price, CLIENT)
            for i in range(n)]


def _dicts(receipts: list[Receipt]) -> list[dict]:  # type: ignore[type-arg]
    return [r.to_dict() for r in receipts]


def test_an_honest_batch_passes() -> None:
    rcs = sign_batch(Identity.generate("w"), _jobs(3))
    assert batch_fault(_dicts(rcs)) is None
    assert batch_fault(_dicts(list(reversed(rcs)))) is None  # any order


def test_a_validly_signed_total_above_the_prices_is_refused() -> None:
    worker = Identity.generate("w")
    rcs = sign_batch(worker, _jobs(3))
    inflated = 3 * PRICE + 1
    r, s = worker.sign(batch_message(root=int(rcs[0].root, 16), worker_key=worker.public_key, count=3,
                                     total=inflated))
    forged = [dataclasses.replace(rc, batch_total=inflated, signature=(hex(r), hex(s))) for rc in rcs]
    assert all(rc.problem() is None for rc in forged)  # each receipt on its own verifies
    assert "not the sum of its jobs' prices" in (batch_fault(_dicts(forged)) or "")


def test_a_batch_missing_a_job_or_repeating_one_is_refused() -> None:
    rcs = sign_batch(Identity.generate("w"), _jobs(3))
    assert "do not make the signed batch of 3" in (batch_fault(_dicts(rcs[:2])) or "")
    assert "do not make the signed batch of 3" in (batch_fault(_dicts([rcs[0], rcs[0], rcs[2]])) or "")


def test_a_changed_leaf_or_a_mix_of_batches_is_refused() -> None:
    worker = Identity.generate("w")
    rcs = sign_batch(worker, _jobs(3))
    cheaper = [dataclasses.replace(rcs[0], price=PRICE - 1), *rcs[1:]]
    assert "hash to root" in (batch_fault(_dicts(cheaper)) or "")
    other = sign_batch(worker, _jobs(3, price=2 * PRICE))
    assert "disagree on the batch" in (batch_fault(_dicts([rcs[0], other[1], rcs[2]])) or "")
    assert "malformed" in (batch_fault([{"job_id": "x"}]) or "")


def test_a_workers_batches_go_into_successive_settle_batch_calls() -> None:
    # the ledger keeps one batch per worker under a batch id: worker 7's three batches need three calls
    assert settle_rounds([7, 8, 7, 9, 7, 8]) == [[0, 1, 3], [2, 5], [4]]
    assert settle_rounds([1, 2, 3]) == [[0, 1, 2]] and settle_rounds([]) == []


@given(client=st.integers(0, 2**251 - 1),
       caps=st.lists(st.tuples(st.integers(1, 2**128 - 1), st.integers(0, 2**252), st.integers(0, 2**252)),
                     min_size=1, max_size=8))
def test_the_spend_header_round_trips(client: int, caps: list[tuple[int, int, int]]) -> None:
    auths = [SpendAuthorization(client, c, r, s) for c, r, s in caps]
    assert parse_spend_header(encode_spend_header(client, auths)) == (client, auths)


_CAP = st.dictionaries(st.sampled_from(["cumulative", "r", "s"]),
                       st.one_of(st.integers(-5, 2**130), st.text(max_size=4)))
_BODY = st.dictionaries(st.sampled_from(["client", "caps", "x"]),
                        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(_CAP, max_size=3)))


@given(st.one_of(st.text(max_size=60), st.builds(json.dumps, _BODY)))
def test_a_malformed_spend_header_is_an_input_error(text: str) -> None:
    try:
        client, auths = parse_spend_header(text)
    except InputError as exc:
        assert "x-ciro-spend" in str(exc)
    else:  # what parses is well formed
        assert auths and all(0 < a.cumulative < 2**128 and a.client == client for a in auths)
