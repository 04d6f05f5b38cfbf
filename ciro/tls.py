"""TLS for the gateway: the certificate files it serves and the trust clients place in them.

The gateway serves HTTPS when ``tls_cert`` and ``tls_key`` are set. Clients verify its certificate against
the system trust store plus ``ca_bundle`` when set (added to the system store, where ``requests``' and
``httpx``'s ``verify=PATH`` replaces it). Verification is never turned off: a certificate nothing here
trusts is an error that names the fix (:data:`CA_HINT`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .config import Config
from .errors import ConfigError

__all__ = ["CA_HINT", "client_ssl_context", "local_ssl_context", "server_tls_files"]

CA_HINT = ("Set ca_bundle (CIRO_CA_BUNDLE, or ca_bundle in config.toml) to a PEM file of the CA that signed the "
           "gateway's certificate, or give the gateway a certificate from a CA this machine trusts.")


def _pem_file(setting: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{setting} is {value!r}, which is not a file. Point {setting} "
                          f"(CIRO_{setting.upper()}, or {setting} in config.toml) at a PEM file.")
    return path


def server_tls_files(cfg: Config) -> tuple[str, str] | None:
    """The gateway's (certificate, key) paths, checked to load as a pair; None when TLS is off."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    cert, key = _pem_file("tls_cert", cfg.tls_cert), _pem_file("tls_key", cfg.tls_key)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"Cannot serve TLS with certificate {cert} and key {key} ({exc}). Give a PEM "
                          "certificate (chain) in tls_cert and its unencrypted PEM private key in tls_key.") from exc
    return str(cert.resolve()), str(key.resolve())


def _trust(ctx: ssl.SSLContext, setting: str, value: str) -> None:
    path = _pem_file(setting, value)
    try:
        ctx.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"Cannot load CA certificates from {setting} {path} ({exc}). It must hold PEM "
                          "certificates (-----BEGIN CERTIFICATE-----).") from exc


def client_ssl_context(cfg: Config) -> ssl.SSLContext:
    """Certificate verification for a client: the system trust store plus ``ca_bundle`` when set."""
    ctx = ssl.create_default_context()
    if cfg.ca_bundle:
        _trust(ctx, "ca_bundle", cfg.ca_bundle)
    return ctx


def local_ssl_context(cfg: Config, cert: str | None) -> ssl.SSLContext:
    """Verification of this machine's own gateway (``ciro up``'s readiness checks): what a client trusts, and
    the gateway's certificate file itself as a trust anchor (so a self-signed or privately issued certificate
    is checked, not skipped). Host names are checked as usual."""
    ctx = client_ssl_context(cfg)
    if cert:
        _trust(ctx, "tls_cert", cert)
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate may be the anchor
    return ctx
