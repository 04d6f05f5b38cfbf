"""`python -m ciro_devnet --port P [--state DIR] [--accounts N] [--seed S] [--chain-id ID]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time

from . import feetoken
from .chain import DEFAULT_CHAIN_ID, RPC_SPEC_VERSION, STARKNET_VERSION, UDC_ADDRESS, Devnet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ciro_devnet", description="Ciro's local Starknet devnet.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5050, help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--state", metavar="DIR", help="save the chain here after each block; reload it at start")
    parser.add_argument("--accounts", type=int, default=10, help="predeployed accounts (default: %(default)s)")
    parser.add_argument("--seed", type=int, help="seed of the accounts' keys (default: random, printed)")
    parser.add_argument("--chain-id", default=DEFAULT_CHAIN_ID, help="chain id short string (default: %(default)s)")
    parser.add_argument("--home", metavar="DIR", help="also deploy the Ciro contracts (unless there already) and "
                        "record them in DIR/chain.json; fund the key 'client' of DIR/keys")
    parser.add_argument("--verbose", action="store_true", help="log every failed call")
    return parser.parse_args(argv)


def banner(devnet: Devnet, url: str, restored: bool) -> str:
    lines = [
        f"Ciro devnet: Starknet {STARKNET_VERSION}, JSON-RPC {RPC_SPEC_VERSION}, chain id {devnet.chain_id_text} "
        f"({hex(devnet.chain_id)})",
        (
            f"Restored from {devnet.files.root} (seed {devnet.seed}; --accounts and --seed do not apply)"
            if restored and devnet.files
            else f"Seed: {devnet.seed}"
        ),
        f"Predeployed accounts (CiroAccount, class hash {hex(devnet.account_class_hash)}); "
        f"fees are charged in STRK ({hex(feetoken.ADDRESS)}), each account holds {feetoken.ACCOUNT_FUNDS // 10**18:,} "
        "STRK at genesis:",
    ]
    for account in devnet.accounts:
        lines += [
            "",
            f"  Account address | {hex(account.address)}",
            f"  Private key     | {hex(account.private_key)}",
            f"  Public key      | {hex(account.public_key)}",
        ]
    lines += [
        "",
        f"Universal Deployer: {hex(UDC_ADDRESS)}",
        f"Blocks: {len(devnet.blocks)}, state: " + (str(devnet.files.root) if devnet.files else "in memory"),
        f"Listening on {url}",
    ]
    return "\n".join(lines)


async def serve(args: argparse.Namespace) -> None:
    from .launch import start_server

    started = time.monotonic()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    devnet = Devnet(accounts=args.accounts, seed=seed, chain_id=args.chain_id, state_dir=args.state)
    runner, url, server = await start_server(devnet, args.host, args.port, ready=not args.home)
    print(banner(devnet, url, devnet.restored), flush=True)
    if args.home:
        from pathlib import Path

        from .bootstrap import bootstrap

        net = await bootstrap(url, devnet.accounts[0], Path(args.home))
        print(f"Ciro contracts: CiroToken {hex(net.token)}, CDCPool {hex(net.pool)}, JobManager "
              f"{hex(net.job_manager)}; governance {hex(net.governance)} (key 'devnet-governance'); recorded in "
              f"{Path(args.home) / 'chain.json'}", flush=True)
    server.ready = True
    print(f"Ready in {time.monotonic() - started:.1f} s", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
