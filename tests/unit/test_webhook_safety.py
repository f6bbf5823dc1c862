"""Webhook signing and the SSRF refusals, without a network: signatures verified with the
standardwebhooks library, URLs and resolved addresses checked as production checks them
(at creation and again at every attempt, so a DNS answer that changes is refused too)."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from activities.webhooks import backoff_seconds
from core.security import seal, unseal
from core.webhooks import address_problem, generate_secret, sign_headers, url_problem
from infra import webhook_http
from infra.webhook_http import AddressRefused, checked_address, post


def test_signatures_verify_with_the_reference_library_one_secret_or_two() -> None:
    old, new = generate_secret(), generate_secret()
    body = b'{"type":"call.ended","timestamp":"2026-01-01T00:00:00+00:00","data":{}}'
    headers = sign_headers([new, old], "evt_1", int(time.time()), body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["type"] == "call.ended"
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace(b"ended", b"ENDED"), headers)


def test_sealed_secrets_open_only_under_their_key() -> None:
    secret = generate_secret()
    sealed = seal(secret, "key-one-for-this-test")
    assert secret not in sealed and sealed.startswith("v1:")
    assert unseal(sealed, "key-one-for-this-test") == secret
    with pytest.raises(ValueError):
        unseal(sealed, "another-key")


@pytest.mark.parametrize(
    ("url", "production", "refused"),
    [
        ("http://example.com/hook", True, "only https://"),
        ("ftp://example.com/hook", False, "must be https://"),
        ("https://user:pw@example.com/hook", True, "credentials"),
        ("https://example.com/hook#x", True, "fragment"),
        ("https://exa mple.com/hook", True, "whitespace"),
        ("http://127.0.0.1:8080/hook", False, None),
        ("https://example.com/hook", True, None),
    ],
)
def test_url_rules(url: str, production: bool, refused: str | None) -> None:
    problem = url_problem(url, production=production)
    assert (problem is None) if refused is None else (refused in (problem or ""))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("100.64.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "not public"),
    ],
)
def test_production_refuses_internal_addresses(address: str, why: str) -> None:
    assert why in (address_problem(address, production=True) or "")
    assert address_problem(address, production=False) is None  # development allows them


def test_public_addresses_pass() -> None:
    assert address_problem("93.184.216.34", production=True) is None
    assert address_problem("2606:2800:220:1::", production=True) is None


async def test_a_host_resolving_to_any_internal_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    monkeypatch.setattr(webhook_http, "resolve", rebinding)
    with pytest.raises(AddressRefused, match="loopback"):
        await checked_address("https://hooks.example.com/x", production=True)
    assert await checked_address("https://hooks.example.com/x", production=False) is None


async def test_a_delivery_is_refused_at_send_time_and_pinned_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([["93.184.216.34"], ["10.0.0.7"]])

    async def changing_dns(host: str, port: int) -> list[str]:
        return next(answers)

    monkeypatch.setattr(webhook_http, "resolve", changing_dns)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            301,
            headers={"location": "http://169.254.169.254/"},
            stream=httpx.ByteStream(b"x" * 9000),
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        answer = await post(
            client,
            "https://hooks.example.com/x",
            b"{}",
            {},
            production=True,
            timeout_seconds=5,
            max_response_bytes=100,
        )
        # Connected to the address that was checked, the name kept for Host and TLS.
        assert seen[0].url.host == "93.184.216.34"
        assert seen[0].headers["host"] == "hooks.example.com"
        assert seen[0].extensions["sni_hostname"] == "hooks.example.com"
        # The redirect is an answer (not followed), and only the cap is read.
        assert answer.status_code == 301 and len(answer.body) == 100
        assert len(seen) == 1
        with pytest.raises(AddressRefused, match="private"):
            await post(
                client,
                "https://hooks.example.com/x",
                b"{}",
                {},
                production=True,
                timeout_seconds=5,
                max_response_bytes=100,
            )
    assert len(seen) == 1  # the refused attempt sent nothing


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    waits = [backoff_seconds(n, 5.0, 3600.0, rng) for n in range(1, 15)]
    for n, wait in enumerate(waits, start=1):
        base = min(3600.0, 5.0 * 2 ** (n - 1))
        assert base / 2 <= wait <= base
    assert len({round(w, 6) for w in waits}) == len(waits)
