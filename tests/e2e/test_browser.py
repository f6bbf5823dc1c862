"""What an operator sees in a real browser (Debian's chromium, driven by Playwright) on the
embedded stack, following only what `dialer run` prints: the printed Temporal UI link of a
call shows its phone number and its summary decoded, with no login and no codec setting
touched; /docs renders the create_call operation from the API's own assets. Every request
the browser makes stays on this machine."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright

from dialer.net import free_port
from tests.support.run_stack import RunningStack, call_from_banner
from tests.support.waiting import wait_until
from tools.procs import clean_env

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium tries Google's hosts at every start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
NUMBER = "+12025550100"
LOCAL_HOSTS = {"localhost", "127.0.0.1"}

pytestmark = pytest.mark.slow


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian's chromium is not installed at {CHROMIUM}: `make browser` installs it "
            "(.ci/run does); Playwright's own browser download cannot be used here"
        )
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _text_in_any_frame(page: Page, text: str) -> bool:
    """The UI renders summaries and details as Markdown, each in an iframe of its own."""
    for frame in page.frames:
        try:
            if text in await frame.inner_text("body", timeout=1000):
                return True
        except Exception:  # a frame navigating or gone between the listing and the read
            continue
    return False


async def test_the_printed_ui_link_shows_the_call_decoded_and_docs_render(
    tmp_path: Path, browser: Browser
) -> None:
    ports = {
        "DIALER_API_PORT": free_port(),
        "DIALER_TEMPORAL_PORT": free_port(),
        "DIALER_TEMPORAL_UI_PORT": free_port(),
        "DIALER_WORKER_METRICS_PORT": free_port(),
    }
    env = clean_env(DIALER_DATA_DIR=tmp_path / "data", DIALER_SHUTDOWN_DRAIN_SECONDS=0, **ports)
    stack = RunningStack(tmp_path, env, "run")
    try:
        banner = await stack.banner()
        printed = stack.proc.log.read_text(errors="replace")
        link = re.search(r"one call: (\S+)", printed)
        assert link and "<call_session_id>" in link.group(1), printed
        assert "decoded" in printed, printed  # the banner says the UI shows payloads decoded
        body = await call_from_banner(banner, wait="dialed")
        assert body["status"] == "success", body

        page = await browser.new_page()
        visited: set[str] = set()
        page.on("request", lambda request: visited.add(urlsplit(request.url).hostname or ""))
        await page.goto(link.group(1).replace("<call_session_id>", body["call_session_id"]))
        # The workflow's input holds the number: readable only through the codec.
        await page.get_by_text(NUMBER).first.wait_for(timeout=30_000)
        assert await page.get_by_text("Codec Server could not connect").count() == 0
        await page.get_by_text("User Metadata", exact=True).first.click()

        async def summary_shown() -> bool:
            return await _text_in_any_frame(page, "Outbound call for user")

        await wait_until(summary_shown, timeout=30, interval=0.5)

        await page.goto(banner.url.split("/api/")[0] + "/docs")
        operation = page.locator(".opblock-summary-path", has_text="/api/call/create_call")
        await operation.first.wait_for(timeout=30_000)
        assert visited <= LOCAL_HOSTS, visited

        await stack.stop(whole_group=False, ports=list(ports.values()))
    finally:
        stack.kill()
