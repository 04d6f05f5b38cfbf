"""Schemathesis hooks (SCHEMATHESIS_HOOKS=st_hooks): the gateway's binary bodies are sent as the bytes
schemathesis generates for them, as for application/octet-stream."""

import schemathesis

for media_type in ("application/vnd.ciro.safetensors", "application/zip"):
    schemathesis.serializer.alias(media_type, "application/octet-stream")
