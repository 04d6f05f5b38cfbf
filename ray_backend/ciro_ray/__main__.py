"""``python -m ciro_ray serve``: run a gateway in the foreground (``ciro up`` starts it for you)."""

from __future__ import annotations

import argparse
import logging
import sys

from ciro import CiroError, Config
from ciro.sealing import store_sealer
from ciro.tls import server_tls_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ciro_ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--home", help="CIRO_HOME (stores and logs)")
    serve.add_argument("--ray-address", help="GCS address of an existing Ray cluster (host:port)")
    serve.add_argument("--workers", type=int, dest="num_workers")
    serve.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    serve.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    serve.add_argument("--network", help="network profile to settle on (CIRO_NETWORK; default local: the devnet)")
    node = sub.add_parser("provider-node", help="a provider's Ray node and its heartbeats (`ciro provider join`)")
    node.add_argument("--address", required=True)
    node.add_argument("--gateway", required=True)
    node.add_argument("--slots", type=int, required=True)
    node.add_argument("--num-cpus", type=float, required=True)
    node.add_argument("--num-gpus", type=float, default=0.0)
    node.add_argument("--node-ip", default="127.0.0.1")
    node.add_argument("--provider", required=True)
    node.add_argument("--gpu-model")
    node.add_argument("--gpu-memory-gb", type=float)
    node.add_argument("--gpu-declared", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "provider-node":
        from .provider import run_node

        try:
            return run_node(address=args.address, gateway=args.gateway, slots=args.slots, num_cpus=args.num_cpus,
                            num_gpus=args.num_gpus, node_ip=args.node_ip, provider=args.provider,
                            gpu_model=args.gpu_model, gpu_memory_gb=args.gpu_memory_gb,
                            gpu_declared=args.gpu_declared)
        except CiroError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    try:
        cfg = Config.load(host=args.host, port=args.port, home=args.home, ray_address=args.ray_address,
                          num_workers=args.num_workers, tls_cert=args.tls_cert, tls_key=args.tls_key,
                          network=args.network)
        tls = server_tls_files(cfg)
        store_sealer(cfg)  # a bad store key stops the start here, with its message
        if cfg.settlement != "off":
            from ciro.chain.network import settle_on

            settle_on(cfg)  # chain.json: the profile's network (its settlement reads it), or the devnet's own
    except CiroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from .gateway import create_app

    # keep-alive well above the SDK's (2 s): idle client connections are closed by the client, not mid-request
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_keep_alive=30, ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
