"""``python -m ciro_ray serve``: run a gateway in the foreground (``ciro up`` starts it for you)."""

from __future__ import annotations

import argparse
import logging
import sys

from ciro import CiroError, Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ciro_ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--home", help="CIRO_HOME (stores and logs)")
    serve.add_argument("--ray-address", help="GCS address of an existing Ray cluster (host:port)")
    serve.add_argument("--workers", type=int, dest="num_workers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = Config.load(host=args.host, port=args.port, home=args.home, ray_address=args.ray_address,
                          num_workers=args.num_workers)
    except CiroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .gateway import create_app

    # keep-alive well above the SDK's (2 s): idle client connections are closed by the client, not mid-request
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
