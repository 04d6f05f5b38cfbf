import asyncio
from pathlib import Path

import numpy as np

from ciro import canonical_bytes, commitment
from ciro_ray.groupcommit import GroupCommitter
from ciro_ray.jobstore import JobStore, NewJob


def _job(i: int) -> NewJob:
    x = {"x": np.full((1, 2), i, dtype=np.float32)}
    return NewJob(f"job{i}", "m" * 64, "none", {}, commitment(x), canonical_bytes(x))


def test_requests_in_one_loop_turn_share_one_transaction(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    calls: list[int] = []
    real_insert = store.insert

    def counting_insert(jobs):  # type: ignore[no-untyped-def]
        calls.append(len(jobs))
        return real_insert(jobs)

    store.insert = counting_insert  # type: ignore[method-assign]
    committer = GroupCommitter(store)

    async def burst() -> list[float]:
        return await asyncio.gather(*(committer.insert([_job(i)]) for i in range(50)))

    times = asyncio.run(burst())
    assert calls == [50]  # one transaction for the whole burst
    assert len(set(times)) == 1
    assert store.counts() == {"queued": 50}


def test_a_bad_request_does_not_fail_its_neighbours(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert([_job(0)])
    committer = GroupCommitter(store)

    async def burst() -> list[object]:
        return await asyncio.gather(committer.insert([_job(1)]), committer.insert([_job(0)]),  # duplicate id
                                    committer.insert([_job(2)]), return_exceptions=True)

    results = asyncio.run(burst())
    assert isinstance(results[1], Exception)
    assert isinstance(results[0], float) and isinstance(results[2], float)
    assert store.counts() == {"queued": 3}
