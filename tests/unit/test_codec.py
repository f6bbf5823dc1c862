"""Payload encryption: key ring parsing, AES-GCM round trips, rotation, tampering."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from infra.codec import (
    ENCODING,
    KEY_ID_META,
    EncryptionCodec,
    PayloadKeyError,
    UndecryptablePayload,
    data_converter,
    local_codec_token,
    local_keys,
    new_key_entry,
    parse_keys,
)

NUMBER = "+12025550100"


def _key() -> str:
    return base64.b64encode(bytes(range(32))).decode()


def _plain() -> Payload:
    return DataConverter.default.payload_converter.to_payload({"phone_number": NUMBER})


def test_parse_keys_accepts_both_formats_and_keeps_order() -> None:
    listed = parse_keys(f"new:{_key()}, old:{_key()}")
    as_json = parse_keys(json.dumps({"new": _key(), "old": _key()}))
    assert list(listed) == list(as_json) == ["new", "old"]
    assert parse_keys("") == {}


@pytest.mark.parametrize(
    "text",
    ["nocolon", "k:not-base64!", f"k:{base64.b64encode(b'short').decode()}", "[1]", "bad id:AAAA"],
)
def test_parse_keys_refuses_bad_rings(text: str) -> None:
    with pytest.raises(PayloadKeyError):
        parse_keys(text)


async def test_round_trip_hides_the_plaintext() -> None:
    codec = EncryptionCodec(parse_keys(new_key_entry("k1")))
    plain = _plain()
    [sealed] = await codec.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_META] == b"k1"
    assert b"2025550100" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [plain]


async def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old_entry, new_entry = new_key_entry("old"), new_key_entry("new")
    [by_old] = await EncryptionCodec(parse_keys(old_entry)).encode([_plain()])
    rotated = EncryptionCodec(parse_keys(f"{new_entry},{old_entry}"))
    assert await rotated.decode([by_old]) == [_plain()]
    [by_new] = await rotated.encode([_plain()])
    assert by_new.metadata[KEY_ID_META] == b"new"
    with pytest.raises(UndecryptablePayload, match="not configured"):
        await EncryptionCodec(parse_keys(old_entry)).decode([by_new])


async def test_relabelled_or_altered_payloads_are_refused() -> None:
    ring = parse_keys(f"{new_key_entry('a')},{new_key_entry('b')}")
    codec = EncryptionCodec(ring)
    [sealed] = await codec.encode([_plain()])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_META: b"b"}, data=sealed.data)
    with pytest.raises(UndecryptablePayload, match="fails authentication"):
        await codec.decode([relabelled])
    flipped = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + b"\x00")
    with pytest.raises(UndecryptablePayload, match="fails authentication"):
        await codec.decode([flipped])


@pytest.mark.parametrize(
    ("key_id", "data", "reason"),
    [
        (b"k", b"", "too short"),  # no nonce at all (AES-GCM would raise a ValueError)
        (b"k", b"\x00" * 20, "too short"),  # a nonce, no room for the tag
        (b"\xff\xfe", b"\x00" * 40, "not text"),
        (b"", b"\x00" * 40, "not configured"),
    ],
)
async def test_malformed_encrypted_payloads_are_undecryptable(
    key_id: bytes, data: bytes, reason: str
) -> None:
    codec = EncryptionCodec(parse_keys(new_key_entry("k")))
    malformed = Payload(metadata={"encoding": ENCODING, KEY_ID_META: key_id}, data=data)
    with pytest.raises(UndecryptablePayload, match=reason):
        await codec.decode([malformed])


async def test_plain_payloads_pass_through_decode() -> None:
    codec = EncryptionCodec(parse_keys(new_key_entry("k")))
    assert await codec.decode([_plain()]) == [_plain()]


async def test_data_converter_encrypts_values_and_failure_messages() -> None:
    assert data_converter(None) is DataConverter.default
    converter = data_converter(new_key_entry("k"))
    [payload] = await converter.encode([{"to": NUMBER}])
    assert b"2025550100" not in payload.SerializeToString()
    assert await converter.decode([payload], [dict]) == [{"to": NUMBER}]
    # Provider error messages may quote the number: they travel encrypted too.
    failure = Failure()
    await converter.encode_failure(ApplicationError(f"invalid To {NUMBER}"), failure)
    assert b"2025550100" not in failure.SerializeToString()
    assert failure.encoded_attributes.data


def test_local_secrets_are_created_once_private_and_reused(tmp_path: Path) -> None:
    keys = local_keys(tmp_path)
    token = local_codec_token(tmp_path)
    assert parse_keys(keys) and len(token) >= 32
    assert local_keys(tmp_path) == keys and local_codec_token(tmp_path) == token
    for name in ("payload-keys", "codec-token"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
