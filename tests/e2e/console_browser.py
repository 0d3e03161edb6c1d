"""Driving the operator console in a real browser: Debian's chromium under Playwright, against a ``semaflow up``.

Playwright's own browser downloads are not used: the tests launch the system chromium
(``scripts/test-tools.sh`` installs it). Each sign-in gets a fresh browser context, so the key a
test signs in with lives only in that context's session storage.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM: Final = "/usr/bin/chromium"
AXE: Final = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
READY_TIMEOUT_MS: Final = 30_000


def chromium_path() -> str:
    """The system chromium the tests drive (fails with how to install it)."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise RuntimeError(
            "the console tests need Debian's chromium: run scripts/test-tools.sh (apt-get install chromium)"
        )
    return found


@dataclass
class Http:
    """Plain JSON calls to the gateway beside the browser (setting up and checking what the console did)."""

    url: str
    key: str

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key or self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        status, answer = self.call(method, path, body, key=key)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def until(self, path: str, check: Any, timeout_s: float = 60.0) -> Any:
        """GET ``path`` until ``check(answer)`` holds; the last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.ok("GET", path)
            if check(answer):
                return answer
            assert time.monotonic() < deadline, (path, answer)
            time.sleep(0.2)


@dataclass
class Console:
    """One signed-in browser tab of the console, and what its page reported (errors, policy violations)."""

    context: BrowserContext
    page: Page
    base: str
    messages: list[str] = field(default_factory=list)

    def go(self, route: str) -> float:
        """Load ``/console#/route`` afresh (not a same-document hash change): its scripts, the key's identity and
        the page's first data; returns the seconds from the start of the navigation until that data is rendered,
        by the page's own clock (``performance.now()`` when it set ``data-ready``)."""
        self.page.goto("about:blank")
        self.page.goto(f"{self.base}/console#/{route}")
        self.wait_ready(route.split("/")[0].split("?")[0] or "overview")
        return int(self.page.locator("main").get_attribute("data-ready-ms") or "0") / 1000

    def wait_ready(self, name: str) -> None:
        self.page.wait_for_selector(f"main[data-ready='{name}']", timeout=READY_TIMEOUT_MS)

    def axe_violations(self) -> list[dict[str, Any]]:
        """Serious and critical accessibility violations axe-core finds on the page as it is."""
        if not self.page.evaluate("typeof window.axe !== 'undefined'"):
            self.page.add_script_tag(path=str(AXE))
        found: list[dict[str, Any]] = self.page.evaluate(
            """async () => (await axe.run(document)).violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target)}))"""
        )
        return found

    def policy_violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m or "Refused to" in m]

    def close(self) -> None:
        self.context.close()


def sign_in(browser: Browser, base: str, key: str, *, bypass_csp: bool = False) -> Console:
    """A fresh context signed in with ``key`` through the sign-in form, on the Overview page."""
    context = browser.new_context(bypass_csp=bypass_csp, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console = Console(context, page, base)

    def keep(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            console.messages.append(message.text)

    page.on("console", keep)
    page.on("pageerror", lambda exc: console.messages.append(f"pageerror: {exc}"))
    page.goto(f"{base}/console")
    console.wait_ready("sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    console.wait_ready("overview")
    return console
