"""The sync client is derived from the async one: every public coroutine of AsyncCiroClient is a blocking method
of CiroClient with the same parameters and docstring, and it really runs the async call."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from ciro import AsyncCiroClient, CiroClient, GatewayUnavailableError

#: Calls only the sync client has (the SDK document's names, the embedded default) or that differ by design.
SYNC_ONLY = {"infer", "deploy_model", "local", "close", "url", "config"}


def _public_coroutines() -> dict[str, object]:
    return {name: fn for name, fn in inspect.getmembers(AsyncCiroClient, inspect.iscoroutinefunction)
            if not name.startswith("_") and name != "aclose"}


def test_every_async_call_has_a_blocking_twin_with_the_same_signature_and_doc() -> None:
    calls = _public_coroutines()
    assert {"submit", "wait", "wait_settled", "create_deployment", "infer_batch"} <= set(calls)
    for name, fn in calls.items():
        if name in SYNC_ONLY:
            continue
        twin = getattr(CiroClient, name, None)
        assert twin is not None, f"CiroClient has no {name}"
        assert not inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(fn), name
        assert twin.__doc__ == fn.__doc__, name


def test_infer_keeps_the_async_parameters_and_adds_the_sdk_document_names() -> None:
    sync = inspect.signature(CiroClient.infer).parameters
    for name in inspect.signature(AsyncCiroClient.infer).parameters:
        assert name in sync, name
    assert {"model_id", "input_data", "generate_proof", "batch_size"} <= set(sync)


def test_a_derived_call_runs_the_async_one_and_raises_its_errors() -> None:
    client = CiroClient("http://127.0.0.1:9", retries=0)  # port 9 (discard): nothing answers
    try:
        with pytest.raises(GatewayUnavailableError, match=r"No Ciro gateway answers at http://127\.0\.0\.1:9"):
            client.health()
        with pytest.raises(TypeError):
            client.wait()  # type: ignore[call-arg]
    finally:
        client.close()

    async def direct() -> None:
        async_client = AsyncCiroClient("http://127.0.0.1:9", retries=0)
        try:
            with pytest.raises(GatewayUnavailableError):
                await async_client.health()
        finally:
            await async_client.aclose()

    asyncio.run(direct())
