"""Files that travel through Redis: small ones inline (base64 in the JSON), large ones in chunked keys.

A Dramatiq message or a result sits in one Redis value; an episode's audio is megabytes, so anything
over `INLINE_MAX` goes into keys of `CHUNK` bytes each, with a TTL so an abandoned one cannot fill the
broker. A reference records size and SHA-256, so a truncated or mixed-up blob is caught on arrival.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from podspool.daemon.executors.remote.names import Names

INLINE_MAX = 256 * 1024
CHUNK = 1024 * 1024


class BlobMissing(RuntimeError):
    """A blob expired or the broker lost it (restarted without persistence)."""


def put(client: Any, names: Names, token: str, name: str, data: bytes, ttl_s: int) -> dict[str, Any]:
    """A JSON-able reference to `data`, its chunks (if any) already stored."""
    ref: dict[str, Any] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if len(data) <= INLINE_MAX:
        ref["data"] = base64.b64encode(data).decode("ascii")
        return ref
    keys = []
    with client.pipeline(transaction=False) as pipe:
        for i, start in enumerate(range(0, len(data), CHUNK)):
            key = names.blob(token, name, i)
            pipe.set(key, data[start:start + CHUNK], ex=ttl_s)
            keys.append(key)
        pipe.execute()
    ref["keys"] = keys
    return ref


def get(client: Any, ref: Mapping[str, Any]) -> bytes:
    if "data" in ref:
        data = base64.b64decode(ref["data"])
    else:
        parts = client.mget(ref["keys"]) if ref["keys"] else []
        if any(p is None for p in parts):
            raise BlobMissing("an artifact expired or was lost by the broker before it was collected")
        data = b"".join(parts)
    if len(data) != ref["size"] or hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise BlobMissing("an artifact arrived damaged (size or SHA-256 differ)")
    return data


def keys_of(refs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [k for ref in refs.values() for k in ref.get("keys", [])]


def delete(client: Any, refs: Mapping[str, Mapping[str, Any]]) -> None:
    keys = keys_of(refs)
    if keys:
        client.delete(*keys)
