"""Settings read back from a board travel masked: XORed with a keystream derived from a one-time
key (``sha256(key + block number)``, 32 bytes a block) that reaches the board only in the script
mpremote sends, which nothing logs. tools/onboard/manifest.py is the board's half."""

from __future__ import annotations

import binascii
import hashlib
import json
import secrets
from typing import Any

KEY_BYTES = 32


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def keystream_xor(data: bytes, key: bytes) -> bytes:
    """Masks or unmasks data (the same operation both ways)."""
    out = bytearray(data)
    block = b""
    for i in range(len(out)):
        if i % 32 == 0:
            block = hashlib.sha256(key + bytes((i // 32 % 256,))).digest()
        out[i] ^= block[i % 32]
    return bytes(out)


def unmask_settings(masked_hex: str, key: bytes) -> dict[str, Any] | None:
    """The board's settings.json from its masked hex, or None when it is not a JSON object."""
    try:
        settings = json.loads(keystream_xor(binascii.unhexlify(masked_hex), key))
    except ValueError:
        return None
    return settings if isinstance(settings, dict) else None
