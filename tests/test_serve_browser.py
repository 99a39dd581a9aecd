"""The web app in a real browser: Debian's Chromium driven by Playwright (``make dev`` installs
both). Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_fixtures import CAP, tiny_app

from personaspace.serve import ServerThread

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """``$PERSONASPACE_CHROMIUM``, else the first Chromium on ``PATH``."""
    configured = os.environ.get("PERSONASPACE_CHROMIUM")
    if configured:
        return configured
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(what: str) -> None:
    """Skip on a developer's machine; fail in CI, where `make dev` must have installed it."""
    if IN_CI:
        pytest.fail(f"{what} (CI must run the browser test)", pytrace=False)
    pytest.skip(what)


try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - depends on the machine
    sync_api = None


@pytest.fixture(scope="module")
def page() -> Iterator[object]:
    if sync_api is None:
        missing("Playwright is not installed: run `make dev`")
    executable = chromium_path()
    if executable is None:
        missing("no Chromium found: `make dev` installs Debian's chromium (apt-get)")
    with ServerThread(tiny_app()) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        tab.on("pageerror", lambda err: errors.append(str(err)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.goto(server.url + "/")
        tab.wait_for_selector("body[data-ready='1']", state="attached", timeout=20_000)
        yield tab
        browser.close()
        assert errors == []


def points(tab: object, chart: str = "turn-chart") -> int:
    return int(tab.get_attribute(f"#{chart}", "data-points"))  # type: ignore[attr-defined]


def send(tab: object, text: str, expect_points: int) -> None:
    tab.fill("#input", text)  # type: ignore[attr-defined]
    tab.click("#send")  # type: ignore[attr-defined]
    tab.wait_for_function(  # type: ignore[attr-defined]
        f"document.body.dataset.busy === '0' && "
        f"document.querySelector('#turn-chart').dataset.points === '{expect_points}'",
        timeout=30_000,
    )


def test_chat_chart_capping_compare_and_replay(page: object, tmp_path: Path) -> None:
    tab = page
    assert "tiny-llama" in tab.inner_text("#model-name")  # type: ignore[attr-defined]
    send(tab, "Hello there", expect_points=1)
    replies = tab.locator(".msg.assistant .text")  # type: ignore[attr-defined]
    assert replies.count() == 1 and replies.nth(0).inner_text().strip()
    assert "uncapped" in tab.locator(".badge").nth(0).inner_text()  # type: ignore[attr-defined]
    assert points(tab, "token-chart") > 0

    tab.check("#cap-toggle")  # type: ignore[attr-defined]
    tab.select_option("#cap-experiment", CAP)  # type: ignore[attr-defined]
    send(tab, "And now?", expect_points=2)
    badge = tab.locator(".badge").nth(1).inner_text()  # type: ignore[attr-defined]
    assert f"cap {CAP} engaged" in badge
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "serve-web-app.png"))  # type: ignore[attr-defined]

    tab.check("#compare-toggle")  # type: ignore[attr-defined]
    send(tab, "Compare me", expect_points=2)  # one point per series
    who = tab.locator(".msg.assistant .who").all_inner_texts()  # type: ignore[attr-defined]
    assert who == ["capped", "uncapped"]
    tab.screenshot(path=str(ARTIFACTS / "serve-web-app-compare.png"))  # type: ignore[attr-defined]

    transcript = tmp_path / "voyage.json"
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Storm tonight."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Calm seas."},
    ]
    transcript.write_text(json.dumps({"messages": messages}))
    tab.set_input_files("#transcript-file", str(transcript))  # type: ignore[attr-defined]
    tab.wait_for_function(  # type: ignore[attr-defined]
        "document.querySelector('#status').textContent.startsWith('replayed 3 turns')",
        timeout=30_000,
    )
    assert points(tab) == 3
    assert tab.locator(".msg.assistant .text").all_inner_texts() == [  # type: ignore[attr-defined]
        "Ahoy.",
        "Storm tonight.",
        "Calm seas.",
    ]
    assert points(tab, "token-chart") == len("Calm seas.")  # one point per reply token
