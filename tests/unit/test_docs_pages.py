"""/docs and /redoc work offline: every asset they load is served by the API itself from the
installed package, none comes from a CDN (the browser test renders /docs in chromium)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.config import Settings

ASSET = re.compile(r"""(?:src|href|spec-url)=["']?([^"' >]+)|url:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_documentation_pages_load_only_local_assets(tmp_path: Path, page: str) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as http:
        html = (await http.get(page)).text
        urls = [a or b for a, b in ASSET.findall(html)]
        assert urls, html
        assert "//" not in "".join(urls), urls  # no absolute URL: nothing leaves the machine
        assert "fonts.googleapis" not in html and "cdn." not in html
        for url in urls:
            answer = await http.get(url)
            assert answer.status_code == 200, url
            assert answer.content, url
