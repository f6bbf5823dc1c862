"""The customer's webhooks, pure parts: Standard Webhooks signing and secrets, and which URLs
and addresses an endpoint may use.

Signing follows the Standard Webhooks specification (https://www.standardwebhooks.com/):
`webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`
under the secret's bytes (`whsec_` + base64); several signatures are separated by spaces
(during a rotation both secrets sign), so any of the specification's libraries verifies them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64
MAX_URL_LENGTH = 2048


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _secret_bytes(secret: str) -> bytes:
    body = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(body)


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of the specification; every secret given signs (rotation)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets_),
    }


# --- where an endpoint may point --------------------------------------------------------------

# The cloud metadata services, named although the private and link-local checks below
# already cover them, so the reason a refusal gives is the true one.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)


def url_problem(url: str, *, production: bool) -> str | None:
    """Why this URL cannot be a webhook endpoint (None: it can, as far as its text goes; its
    addresses are checked by address_problem, at creation and at every delivery)."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return "the URL holds whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the URL cannot be read"
    if parts.scheme not in ("https", "http"):
        return "the URL must be https:// (or http:// in development)"
    if production and parts.scheme != "https":
        return "only https:// URLs are allowed in production"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "the URL must not hold credentials"
    if parts.fragment:
        return "the URL must not have a #fragment"
    if port == 0:
        return "the URL's port cannot be 0"
    return None


def address_problem(address: str, *, production: bool) -> str | None:
    """Why a resolved address may not be connected to (None: it may). In development every
    address is allowed, so tests and `make run` can use loopback receivers."""
    if not production:
        return None
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "the URL resolves to a cloud metadata address"
    if ip.is_loopback:
        return "the URL resolves to a loopback address"
    if ip.is_link_local:
        return "the URL resolves to a link-local address"
    if ip.is_unspecified:
        return "the URL resolves to an address that is not public"
    if ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10"):
        return "the URL resolves to a private address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "the URL resolves to an address that is not public"
    return None
