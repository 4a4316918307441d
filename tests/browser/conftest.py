"""Browser tests: real ``sygmax run`` processes, the built web UI, Playwright driving Debian's Chromium.

Fixtures (async Playwright; pytest-asyncio runs everything on the session loop):

* ``web_assets`` (session): the built UI in ``sygmax/web/static``; built once with npm
  (``npm ci`` if ``web/node_modules`` is missing, then ``vite build``) when missing or older
  than any source file in ``web/`` or ``plugins/*/ui``.
* ``servers``: ``await servers.start(n, profiles="api,realtime", **env)`` starts ``n`` real
  server processes on free ports against this test's PostgreSQL database and the session
  Redis, waits until each is ready, and returns :class:`Server` objects (``url``, ``ws_url``,
  ``kill()``). Every process accepts cookie WebSockets from the others' origins, so a page
  served by one can hold sockets to another (fail-over tests). ``servers.one()`` starts a
  single one. All are stopped after the test.
* ``browser`` (session): headless ``/usr/bin/chromium``; ``new_context(server, **options)``
  gives a fresh context (own cookies and storage) whose pages open on ``server.url``.
* helpers: :func:`sign_up_ui`, :func:`sign_in_ui`, :func:`sign_up_api` (an account and its
  session cookies through the API, no page needed), :func:`page_problems`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import service_environ
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
STATIC = ROOT / "sygmax" / "web" / "static"
CHROMIUM = "/usr/bin/chromium"
SYGMAX = str(Path(sys.executable).parent / "sygmax")
PASSWORD = "correct horse battery"

# Playwright's auto-waiting assertions: generous for a 2-core machine shared by several test runs.
expect.set_options(timeout=20_000)


# ---------------------------------------------------------------------------------------------
# Assets


def _newest_source() -> float:
    roots = [WEB / "src", WEB / "index.html", WEB / "package-lock.json", WEB / "vite.config.ts",
             *sorted((ROOT / "plugins").glob("*/ui"))]
    newest = 0.0
    for root in roots:
        files = [root] if root.is_file() else [path for path in root.rglob("*") if path.is_file()]
        newest = max([newest, *(path.stat().st_mtime for path in files)])
    return newest


def _stale() -> bool:
    index = STATIC / "index.html"
    return not index.exists() or index.stat().st_mtime < _newest_source()


def build_assets() -> None:
    """Build the UI if it is missing or stale; one builder at a time (other sessions share the tree)."""
    if not _stale():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("The web UI is not built and npm is missing: install Node.js 18+ (./install.sh --dev does)")
    with open(WEB / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _stale():  # built by another session while we waited
            return
        if not (WEB / "node_modules" / ".package-lock.json").exists():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
        # vite build without the type check: `npm run build` (install.sh, CI) type-checks; here a
        # type error in someone's unfinished page must not stop every browser test.
        subprocess.run([npm, "exec", "--", "vite", "build", "--logLevel", "warn"], cwd=WEB, check=True)


@pytest.fixture(scope="session")
def web_assets() -> Path:
    build_assets()
    assert (STATIC / "index.html").exists()
    return STATIC


# ---------------------------------------------------------------------------------------------
# Server processes


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log_path: Path
    environ: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (server and its workers): a crash, not a shutdown."""
        if self.alive():
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Servers:
    def __init__(self, database_url: str, redis_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.started: list[Server] = []

    async def start(self, count: int = 1, profiles: str = "api,realtime", **env: str) -> list[Server]:
        """Start ``count`` processes of ``profiles``; ``env`` adds SYGMAX_* settings (all of them)."""
        ports = [free_port() for _ in range(count)]
        origins = ",".join(f"http://127.0.0.1:{port}" for port in ports)
        servers = []
        for port in ports:
            environ = {
                **os.environ,
                **service_environ(self.database_url, self.redis_url, self.tmp_path / "objects"),
                "SYGMAX_CONFIG": str(self.tmp_path / "absent.toml"),
                "SYGMAX_SERVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                # Sockets from the sibling processes' pages too (see the module docstring).
                "SYGMAX_CORS_ALLOW_ORIGINS": origins,
                "SYGMAX_AUTH_COOKIE_SECURE": "false",  # plain http on 127.0.0.1
                "SYGMAX_AUTH_REGISTRATION": "open",
                **env,
            }
            log_path = self.tmp_path / f"server-{port}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen([SYGMAX, "run", profiles, "--port", str(port), "--workers", "1"],
                                           env=environ, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            server = Server(port, process, log_path, environ)
            self.started.append(server)
            servers.append(server)
        await asyncio.gather(*(self._ready(server) for server in servers))
        return servers

    async def one(self, **env: str) -> Server:
        return (await self.start(1, **env))[0]

    @staticmethod
    async def _ready(server: Server, timeout: float = 90.0) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                if not server.alive():
                    raise AssertionError(f"server on port {server.port} exited:\n{server.log()[-4000:]}")
                try:
                    if (await client.get(f"{server.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"server on port {server.port} not ready in {timeout}s:\n{server.log()[-4000:]}")

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
async def servers(web_assets, database_url, redis_url, tmp_path):
    started = Servers(database_url, redis_url, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def server(servers) -> Server:
    """One ``api,realtime`` process (registration open)."""
    return await servers.one()


# ---------------------------------------------------------------------------------------------
# Browser


@pytest.fixture(scope="session")
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield launched
        await launched.close()


@pytest.fixture
async def new_context(browser: Browser):
    """``await new_context(server, viewport=..., color_scheme=...)``: a fresh browser profile."""
    contexts: list[BrowserContext] = []

    async def make(server: Server, **options: Any) -> BrowserContext:
        context = await browser.new_context(base_url=server.url, **options)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        await context.close()


def page_problems(page: Page) -> list[str]:
    """Collect the page's console errors and uncaught exceptions (CSP violations show up here).

    Chromium also logs every HTTP error answer as "Failed to load resource"; those are the
    API's expected 401s and 4xx problems, which the tests check through the page instead.
    """
    problems: list[str] = []

    def console(message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


# ---------------------------------------------------------------------------------------------
# Accounts


async def sign_up_ui(page: Page, email: str, name: str, password: str = PASSWORD) -> None:
    """Create an account through the sign-up page; ends signed in on the home page."""
    await page.goto("/signup")
    await page.get_by_label("Display name").fill(name)
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")


async def sign_in_ui(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/signin")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("banner")).to_be_visible()


async def sign_up_api(context: BrowserContext, email: str, name: str, password: str = PASSWORD,
                      register: bool = True) -> dict:
    """Register (unless ``register`` is false) and log in through the API with the context's
    cookie jar: pages of ``context`` are then signed in. Returns the user (GET /users/me)."""
    request = context.request
    if register:
        response = await request.post("/api/v1/auth/register",
                                      data={"email": email, "password": password, "display_name": name})
        assert response.status == 202, await response.text()
    response = await request.post("/api/v1/auth/session", data={"email": email, "password": password})
    assert response.status == 200, await response.text()
    me = await request.get("/api/v1/users/me")
    assert me.status == 200, await me.text()
    return await me.json()


async def csrf_headers(context: BrowserContext) -> dict[str, str]:
    """The X-CSRF-Token header for unsafe API calls made with the context's cookies."""
    cookies = {cookie["name"]: cookie["value"] for cookie in await context.cookies()}
    return {"X-CSRF-Token": cookies.get("sygmax_csrf", "")}
