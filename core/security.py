"""API keys: random, shown once, stored as a keyed hash, compared in constant time; and the
secrets Dialer must read back, sealed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_PREFIX = "dk_"


def generate_key() -> tuple[str, str]:
    """Return (key, prefix). The prefix identifies the key in listings, never authenticates."""
    prefix = secrets.token_hex(4)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_key(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_prefix(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key[len(KEY_PREFIX) :]
    prefix, sep, _ = rest.partition("_")
    return prefix if sep and len(prefix) == 8 else None


# --- secrets Dialer must read back (a webhook's signing secret) ------------------------------
# A signing secret cannot be stored as a hash: Dialer needs it to sign. It is stored sealed
# with AES-GCM under a key derived from DIALER_SECRET_KEY (the key that already guards the
# API keys' hashes), so a copy of the database alone does not sign anybody's webhooks.
SEALED_PREFIX = "v1:"
_SEAL_CONTEXT = b"dialer sealed secret v1"


def _seal_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _SEAL_CONTEXT, hashlib.sha256).digest()


def seal(plaintext: str, secret: str) -> str:
    """AES-256-GCM under a key derived from `secret`; `v1:` + base64(nonce + ciphertext)."""
    nonce = os.urandom(12)
    sealed = AESGCM(_seal_key(secret)).encrypt(nonce, plaintext.encode(), _SEAL_CONTEXT)
    return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode()


def unseal(token: str, secret: str) -> str:
    """The plaintext of `seal`. Raises ValueError for a token sealed under another key."""
    if not token.startswith(SEALED_PREFIX):
        raise ValueError("not a sealed secret")
    raw = base64.b64decode(token[len(SEALED_PREFIX) :])
    try:
        plain = AESGCM(_seal_key(secret)).decrypt(raw[:12], raw[12:], _SEAL_CONTEXT)
    except InvalidTag as exc:
        raise ValueError("the secret was sealed under another DIALER_SECRET_KEY") from exc
    return plain.decode()
