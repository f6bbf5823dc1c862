"""Payload encryption: phone numbers and variables travel through Temporal (its database, its
UI, its CLI) only as AES-GCM ciphertext. Workers and the API encrypt and decrypt with the keys
of `DIALER_PAYLOAD_KEYS`; operators read payloads through the API's codec endpoint.

Rotation: put a new key first. The first key encrypts, every listed key decrypts, so histories
written with an older key stay readable as long as that key is listed."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID_META = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PayloadKeyError(ValueError):
    """DIALER_PAYLOAD_KEYS cannot be read, or a payload names a key that is not configured."""


class UndecryptablePayload(ValueError):
    """A payload marked encrypted that cannot be decrypted: a key that is not configured, a
    key id that is not one, data too short to hold a nonce and a tag, a failed
    authentication, or plain text that is not a payload. The message says which, never the
    data."""


def parse_keys(text: str) -> dict[str, bytes]:
    """Read `{"id": "<base64>", ...}` or `id:<base64>,id2:<base64>`; order is kept (the first
    key encrypts). Keys are 16, 24 or 32 bytes (AES-128/192/256)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            pairs = list(json.loads(text).items())
        except (json.JSONDecodeError, AttributeError) as exc:
            raise PayloadKeyError("DIALER_PAYLOAD_KEYS is not a JSON object") from exc
    else:
        pairs = []
        for item in text.split(","):
            key_id, sep, value = item.strip().partition(":")
            if not sep:
                raise PayloadKeyError("DIALER_PAYLOAD_KEYS entries look like <id>:<base64 key>")
            pairs.append((key_id, value))
    keys: dict[str, bytes] = {}
    for key_id, value in pairs:
        if not _KEY_ID.match(key_id):
            raise PayloadKeyError("a payload key id may use letters, digits, '.', '_' and '-'")
        try:
            raw = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PayloadKeyError(f"payload key {key_id!r} is not valid base64") from exc
        if len(raw) not in (16, 24, 32):
            raise PayloadKeyError(f"payload key {key_id!r} must be 16, 24 or 32 bytes")
        if key_id in keys:
            raise PayloadKeyError(f"payload key {key_id!r} is listed twice")
        keys[key_id] = raw
    return keys


def new_key_entry(key_id: str) -> str:
    """A fresh `id:<base64>` entry (AES-256)."""
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def local_keys(data_dir: Path) -> str:
    """The embedded stack's key ring, generated once under the data dir and reused, so the
    history kept in the dev server's database stays readable across runs."""
    return _create_once(data_dir / "payload-keys", lambda: new_key_entry("local-1"))


def local_codec_token(data_dir: Path) -> str:
    """The embedded stack's operator token for the codec endpoint, generated once."""
    return _create_once(data_dir / "codec-token", lambda: secrets.token_urlsafe(32))


def _create_once(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not each write a different secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
    return path.read_text().strip()


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise PayloadKeyError("at least one payload key is needed")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))

    @property
    def key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        # The key id is authenticated too, so a payload cannot be relabelled to another key.
        sealed = self._ciphers[self._current].encrypt(
            nonce, payload.SerializeToString(), self._current.encode()
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_META: self._current.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on: plain already
        raw_id = payload.metadata.get(KEY_ID_META, b"")
        try:
            key_id = raw_id.decode()
        except UnicodeDecodeError:
            raise UndecryptablePayload("the key id is not text") from None
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UndecryptablePayload(
                f"payload is encrypted with key {key_id[:64]!r}, which is not configured"
            )
        # Every payload _encrypt writes holds the nonce and AES-GCM's 16-byte tag at least.
        if len(payload.data) < NONCE_BYTES + TAG_BYTES:
            raise UndecryptablePayload("the data is too short to be an encrypted payload")
        try:
            plain = cipher.decrypt(
                payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode()
            )
        except InvalidTag:
            raise UndecryptablePayload(
                "the data fails authentication (wrong key or altered)"
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise UndecryptablePayload("the decrypted data is not a payload") from None


def codec_for(payload_keys: str | None) -> EncryptionCodec | None:
    keys = parse_keys(payload_keys or "")
    return EncryptionCodec(keys) if keys else None


def data_converter(payload_keys: str | None) -> DataConverter:
    """The one DataConverter of every Dialer client. With keys, payloads are encrypted and
    failure messages and stack traces move into encrypted attributes (a provider's error
    message may quote the number)."""
    codec = codec_for(payload_keys)
    if codec is None:
        return DataConverter.default
    return DataConverter(
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
