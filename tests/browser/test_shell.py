"""The web UI shell in a real browser (Chromium via Playwright) against real server processes."""

from __future__ import annotations

import gzip
import json
import re
import uuid

import httpx
from playwright.async_api import expect

from tests.browser.conftest import (
    PASSWORD,
    ROOT,
    csrf_headers,
    page_problems,
    sign_in_ui,
    sign_up_api,
    sign_up_ui,
)


def nav(page):
    return page.get_by_role("navigation", name="Modules")


async def test_sign_up_sign_in_sign_out(server, new_context):
    context = await new_context(server)
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/signin$"))  # signed out: the sign-in page
    await page.get_by_role("link", name="Create one").click()
    await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    await sign_up_ui(page, "ada@example.org", "Ada Lovelace")
    await expect(page.locator(".user-name")).to_have_text("Ada Lovelace")
    await page.reload()  # the session cookie survives a reload
    await expect(page.locator(".user-name")).to_have_text("Ada Lovelace")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to Sygmax")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/signin$"))
    assert "sygmax_access" not in {cookie["name"] for cookie in await context.cookies()}
    await page.goto("/settings")  # a deep link while signed out comes back after sign-in
    await expect(page).to_have_url(re.compile(r"/signin\?next=%2Fsettings$"))
    await page.get_by_label("E-mail").fill("ada@example.org")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("heading", name="Your settings")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"/settings$"))
    assert problems == []


async def test_wrong_password_and_invalid_input_show_the_problem(server, new_context):
    context = await new_context(server)
    await sign_up_api(context, "bob@example.org", "Bob")
    await context.clear_cookies()
    page = await context.new_page()
    await page.goto("/signin")
    await page.get_by_label("E-mail").fill("bob@example.org")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail address or password")
    await expect(page.get_by_role("heading", name="Sign in to Sygmax")).to_be_visible()

    # A 400 problem naming a field is shown beside that field, marked invalid for assistive tech.
    await page.goto("/signup")
    await page.get_by_label("Display name").fill("Carol")
    await page.get_by_label("E-mail").fill("carol@example.org")
    await page.get_by_label("Password").fill("short")
    await page.get_by_role("button", name="Create account").click()
    password = page.get_by_label("Password")
    await expect(password).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".ui-field-error")).to_contain_text("password")
    await expect(page.get_by_role("alert")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.url) as client:  # and nothing was created
        login = await client.post("/api/v1/auth/login", json={"email": "carol@example.org", "password": "short"})
        assert login.status_code == 401


async def test_registration_policy_is_reflected(servers, new_context):
    closed = await servers.one(SYGMAX_AUTH_REGISTRATION="closed")
    page = await (await new_context(closed)).new_page()
    await page.goto("/signin")
    await expect(page.get_by_role("heading", name="Sign in to Sygmax")).to_be_visible()
    await expect(page.get_by_role("link", name="Create one")).to_have_count(0)
    await page.goto("/signup")
    await expect(page.get_by_role("heading", name="Registration is closed")).to_be_visible()

    invite = await servers.one(SYGMAX_AUTH_REGISTRATION="invite")
    page = await (await new_context(invite)).new_page()
    await page.goto("/signup")
    await expect(page.get_by_label("Invitation code")).to_be_visible()


async def test_workspace_create_and_switch(server, new_context):
    context = await new_context(server)
    await sign_up_api(context, "dan@example.org", "Dan")
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/")
    await expect(page.get_by_text("You are not in a workspace yet")).to_be_visible()
    for name in ("Research", "Operations"):
        await page.get_by_role("button", name="Create workspace").click()
        dialog = page.get_by_role("dialog", name="Create a workspace")
        await dialog.get_by_label("Workspace name").fill(name)
        await dialog.get_by_role("button", name="Create").click()
        await expect(dialog).to_be_hidden()
        await expect(page.locator(".workspace-name")).to_have_text(name)
    switcher = page.get_by_label("Workspace", exact=True)
    await expect(switcher.locator("option")).to_have_text(["Operations", "Research"])  # sorted by name
    await switcher.select_option(label="Research")
    await expect(page.locator(".workspace-name")).to_have_text("Research")
    await page.reload()  # the choice is remembered
    await expect(page.locator(".workspace-name")).to_have_text("Research")

    # An invalid name: the problem is shown in the dialog and nothing is created.
    await page.get_by_role("button", name="Create workspace").click()
    dialog = page.get_by_role("dialog", name="Create a workspace")
    await dialog.get_by_label("Workspace name").fill("x" * 101)
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog.get_by_label("Workspace name")).to_have_attribute("aria-invalid", "true")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    listed = await context.request.get("/api/v1/workspaces")
    assert sorted(w["name"] for w in await listed.json()) == ["Operations", "Research"]
    assert problems == []


async def test_sidebar_lists_the_enabled_plugins_pages(servers, new_context):
    enabled = await servers.one()
    context = await new_context(enabled)
    await sign_up_api(context, "root@example.org", "Root")  # the first account: instance admin
    plugins = await (await context.request.get("/api/v1/system/plugins")).json()
    built = {plugin["name"] for plugin in plugins if (ROOT / "plugins" / plugin["name"] / "ui" / "index.tsx").exists()}
    declared = {page["title"]: page["path"] for plugin in plugins for page in plugin["ui_pages"]
                if plugin["name"] in built}
    assert declared["System status"] == "/admin/system"
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/")
    for title, path in declared.items():
        await expect(nav(page).get_by_role("link", name=title, exact=True)).to_have_attribute("href", path)
    # A plugin that declares pages but has no front end in this build gets no dead link.
    for plugin in plugins:
        if plugin["name"] not in built:
            for declared_page in plugin["ui_pages"]:
                await expect(nav(page).locator(f'a[href="{declared_page["path"]}"]')).to_have_count(0)
    await nav(page).get_by_role("link", name="System status").click()  # the system plugin's lazy chunk
    await expect(page.get_by_role("heading", name="System status", level=1)).to_be_visible()
    await expect(page.locator(".system-version")).not_to_be_empty()
    await expect(page.get_by_role("list", name="Dependencies")).to_contain_text("database: reachable")
    await expect(nav(page).get_by_role("link", name="System status")).to_have_attribute("aria-current", "page")
    assert problems == []

    # The same shell against a process with the system plugin disabled: neither link nor route.
    disabled = await servers.one(SYGMAX_PLUGINS_DISABLED="system")
    other = await new_context(disabled)
    await sign_up_api(other, "root@example.org", "Root", register=False)
    page = await other.new_page()
    await page.goto("/")
    await expect(nav(page).get_by_role("link", name="Users")).to_be_visible()  # admin, shell pages still there
    await expect(nav(page).get_by_role("link", name="System status")).to_have_count(0)
    await page.goto("/admin/system")
    await expect(page.get_by_role("heading", name="Page not found")).to_be_visible()


async def test_settings_password_and_tokens(server, new_context):
    context = await new_context(server)
    await sign_up_api(context, "eve@example.org", "Eve")
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/settings")
    password_form = page.locator("form", has=page.get_by_role("heading", name="Password"))
    await password_form.get_by_label("Current password").fill("wrong password!!")
    await password_form.get_by_label("New password").fill("a brand new secret")
    await password_form.get_by_role("button", name="Change password").click()
    await expect(password_form.get_by_role("alert")).to_be_visible()
    await password_form.get_by_label("Current password").fill(PASSWORD)
    await password_form.get_by_role("button", name="Change password").click()
    await expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.url) as client:
        old = await client.post("/api/v1/auth/login", json={"email": "eve@example.org", "password": PASSWORD})
        assert old.status_code == 401
        new = await client.post("/api/v1/auth/login",
                                json={"email": "eve@example.org", "password": "a brand new secret"})
        assert new.status_code == 200

    # Profile: the new display name shows in the banner.
    profile = page.locator("form", has=page.get_by_role("heading", name="Profile"))
    await profile.get_by_label("Display name").fill("Eve Online")
    await profile.get_by_role("button", name="Save profile").click()
    await expect(page.locator(".account-name")).to_have_text("Eve Online")

    # Tokens: create, use, revoke.
    tokens = page.locator("section", has=page.get_by_role("heading", name="Personal API tokens"))
    await expect(tokens.get_by_text("No tokens yet")).to_be_visible()
    await tokens.get_by_label("Token name").fill("ci bot")
    await tokens.get_by_role("button", name="Create token").click()
    shown = page.get_by_role("dialog", name="Your new token").get_by_label("New token")
    await expect(shown).to_have_value(re.compile(r"^syg_"))
    secret = await shown.input_value()
    await page.get_by_role("button", name="Done").click()
    await expect(tokens.get_by_role("list", name="Your API tokens")).to_contain_text("ci bot")
    bearer = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/api/v1/users/me", headers=bearer)).json()["email"] == "eve@example.org"
        await tokens.get_by_role("button", name="Revoke ci bot").click()
        await expect(tokens.get_by_text("No tokens yet")).to_be_visible()
        assert (await client.get("/api/v1/users/me", headers=bearer)).status_code == 401
    assert problems == []


async def test_admin_pages_only_for_admins(server, new_context, db):
    admin_context = await new_context(server)
    await sign_up_api(admin_context, "root@example.org", "Root")
    user_context = await new_context(server)
    await sign_up_api(user_context, "frank@example.org", "Frank")
    response = await user_context.request.post("/api/v1/workspaces", data={"name": "Frank's"},
                                               headers=await csrf_headers(user_context))
    assert response.status == 201, await response.text()

    page = await admin_context.new_page()
    problems = page_problems(page)
    await page.goto("/")
    admin_nav = page.get_by_role("list", name="Administration")
    await expect(admin_nav.get_by_role("link")).to_have_text(
        ["Users", "Workspaces", "Feature flags", "Audit log", "System status"])
    await admin_nav.get_by_role("link", name="Users").click()
    await expect(page.get_by_role("table")).to_contain_text("frank@example.org")
    await admin_nav.get_by_role("link", name="Workspaces").click()
    await expect(page.get_by_role("row").filter(has_text="Frank's")).to_contain_text("frank@example.org")
    await admin_nav.get_by_role("link", name="Feature flags").click()
    await page.get_by_label("Name", exact=True).fill("new_editor")
    await page.get_by_role("button", name="Create flag (off)").click()
    switch = page.get_by_role("switch", name="new_editor enabled")
    await expect(switch).to_have_attribute("aria-checked", "false")
    await switch.click()
    await expect(switch).to_have_attribute("aria-checked", "true")
    assert await db.fetchval("SELECT enabled FROM sygmax_feature_flag WHERE name = 'new_editor'") is True
    await admin_nav.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("table")).to_contain_text("workspace.create")
    assert problems == []

    page = await user_context.new_page()
    await page.goto("/")
    await expect(nav(page).get_by_role("link", name="Home")).to_be_visible()
    await expect(page.get_by_role("list", name="Administration")).to_have_count(0)
    for path in ("/admin/users", "/admin/audit", "/admin/system"):
        await page.goto(path)
        await expect(page.get_by_role("heading", name="Administrators only")).to_be_visible()
    # Hiding is not the protection: the API refuses too.
    assert (await user_context.request.get("/api/v1/system/users")).status == 403
    assert (await user_context.request.get("/api/v1/audit")).status == 403


async def test_keyboard_only_navigation(server, new_context):
    context = await new_context(server)
    page = await context.new_page()
    await page.goto("/signin")

    async def focused() -> str:
        return await page.evaluate("""() => {
            const el = document.activeElement;
            return el.getAttribute('aria-label') || (el.labels && el.labels[0] && el.labels[0].textContent)
                || el.textContent.trim();
        }""")

    await expect(page.get_by_role("heading", name="Sign in to Sygmax")).to_be_visible()
    # Sign up and in by keyboard alone.
    await page.keyboard.press("Tab")
    assert await focused() == "E-mail"
    await page.keyboard.press("Tab")
    assert await focused() == "Password"
    await page.keyboard.press("Tab")
    assert await focused() == "Sign in"
    await page.keyboard.press("Tab")
    assert await focused() == "Create one"
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    for text in ("Grace", "grace@example.org", PASSWORD):
        await page.keyboard.press("Tab")
        await page.keyboard.type(text)
    await page.keyboard.press("Enter")  # submits the form
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")

    order = []
    for _ in range(8):
        await page.keyboard.press("Tab")
        order.append(await focused())
        # The focus ring is visible on every stop.
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", order[-1]
    assert order[:7] == ["Skip to content", "Sygmax", "Create workspace", "Dark theme", "Grace", "Sign out", "Home"]
    # Then the other sidebar links (modules, then Administration: the first account is an admin).
    assert await page.evaluate("document.activeElement.closest('#sidebar') !== null")
    await page.keyboard.press("Enter")
    await expect(page).not_to_have_url(re.compile(r"/$"))
    await page.go_back()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Welcome")
    # The skip link moves focus to the main landmark.
    await page.keyboard.press("Shift+Tab")
    while await focused() != "Skip to content":
        await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # The create-workspace dialog works from the keyboard and gives focus back.
    await page.get_by_role("button", name="Create workspace").focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Create a workspace")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Workspace name")).to_be_focused()
    await page.keyboard.type("Keyboard")
    await page.keyboard.press("Enter")
    await expect(page.locator(".workspace-name")).to_have_text("Keyboard")
    await expect(dialog).to_be_hidden()
    # With a workspace, the switcher is the next stop after the brand.
    await page.get_by_role("link", name="Sygmax").focus()
    await page.keyboard.press("Tab")
    assert await focused() == "Workspace"
    # Landmarks for assistive technology.
    await expect(page.get_by_role("banner")).to_have_count(1)
    await expect(page.get_by_role("main")).to_have_count(1)
    await expect(nav(page)).to_have_count(1)


async def test_phone_viewport(server, new_context):
    context = await new_context(server, viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    await sign_up_api(context, "hana@example.org", "Hana")
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/")
    menu = page.get_by_role("button", name="Menu")
    await expect(menu).to_have_attribute("aria-expanded", "false")
    await expect(nav(page)).to_be_hidden()  # the sidebar collapses
    await menu.click()
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await expect(nav(page)).to_be_visible()
    await nav(page).get_by_role("link", name="Home").click()
    await expect(nav(page)).to_be_hidden()  # following a link closes the drawer
    for path in ("/", "/settings"):
        await page.goto(path)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path, width)  # nothing forces sideways scrolling
    await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()
    assert problems == []


async def test_dark_theme_follows_the_system_and_the_toggle(server, new_context):
    dark = await new_context(server, color_scheme="dark")
    await sign_up_api(dark, "ivy@example.org", "Ivy")
    page = await dark.new_page()
    await page.goto("/")
    html = page.locator("html")
    await expect(html).to_have_attribute("data-theme", "dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    toggle = page.get_by_role("button", name="Dark theme")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await toggle.click()
    await expect(html).to_have_attribute("data-theme", "light")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    assert await page.evaluate("getComputedStyle(document.body).backgroundColor") != background
    await page.reload()  # the choice outlives the page
    await expect(html).to_have_attribute("data-theme", "light")

    light = await new_context(server, color_scheme="light")
    page = await light.new_page()
    await page.goto("/signin")
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")


XSS_NAMES = [
    "&lt;img src=x onerror=window.__xss=1&gt;",
    "javascript:window.__xss=1",
    "' onmouseover='window.__xss=1' x='",
    "${window.__xss=1}",
]


async def test_hostile_names_render_as_text(server, new_context, db):
    context = await new_context(server)
    user = await sign_up_api(context, "root@example.org", XSS_NAMES[2])
    headers = await csrf_headers(context)
    made = []
    for name in (XSS_NAMES[0], XSS_NAMES[1], XSS_NAMES[3]):
        response = await context.request.post("/api/v1/workspaces", data={"name": name}, headers=headers)
        assert response.status == 201, await response.text()
        made.append((await response.json())["id"])
    # Names the API would refuse (angle brackets), as if written by an older version or by hand:
    # the page must still show them as text.
    raw = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'
    await db.execute("UPDATE sygmax_workspace SET name = $1 WHERE id = $2", raw, uuid.UUID(made[0]))
    await db.execute("UPDATE sygmax_user SET display_name = $1 WHERE id = $2", raw, uuid.UUID(user["id"]))

    page = await context.new_page()
    problems = page_problems(page)
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto("/")
    await expect(page.locator(".user-name")).to_have_text(raw)
    options = page.get_by_label("Workspace", exact=True).locator("option")
    await expect(options).to_have_count(3)
    assert sorted(await options.all_text_contents()) == sorted([raw, XSS_NAMES[1], XSS_NAMES[3]])
    for path in ("/admin/users", "/admin/workspaces", "/settings"):
        await page.goto(path)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        await page.mouse.move(10, 10)
    await page.goto("/admin/workspaces")
    await expect(page.get_by_role("table")).to_contain_text(raw)
    await page.get_by_role("table").hover()
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("main img, main script, banner script").count() == 0
    assert dialogs == [] and problems == []


async def test_sign_in_with_an_oidc_provider(servers, new_context):
    from tests.oidc_provider import OidcProviderServer

    idp = OidcProviderServer().start()
    try:
        idp.user = {"sub": "subject-webui", "email": "olga@example.org", "email_verified": True, "name": "Olga"}
        server = await servers.one(SYGMAX_OIDC_PROVIDERS=json.dumps({"test": idp.provider_config("Test IdP")}),
                                   SYGMAX_OIDC_ALLOW_INSECURE_HTTP="true")
        page = await (await new_context(server)).new_page()
        problems = page_problems(page)
        await page.goto("/settings")
        button = page.get_by_role("link", name="Sign in with Test IdP")
        await expect(button).to_have_attribute("href", "/api/v1/auth/oidc/test/login?next=%2Fsettings")
        await button.click()  # to the provider, which approves at once, and back with session cookies
        await expect(page.get_by_role("heading", name="Your settings")).to_be_visible()
        await expect(page.locator(".user-email")).to_have_text("olga@example.org")
        assert problems == []
    finally:
        idp.stop()


async def test_initial_bundle_is_small(web_assets):
    """What a first visit downloads before the sign-in page renders (reported in the closing note)."""
    index = (web_assets / "index.html").read_text()
    initial = re.findall(r'(?:src|href)="/assets/([^"]+\.(?:js|css))"', index)
    assert any(name.endswith(".js") for name in initial) and any(name.endswith(".css") for name in initial)
    assert "<script>" not in index and "style=" not in index  # nothing inline: the CSP allows none
    sizes = {name: len(gzip.compress((web_assets / "assets" / name).read_bytes(), 9)) for name in initial}
    total = sum(sizes.values()) + len(gzip.compress(index.encode(), 9))
    print(f"initial load, gzip -9: {total} bytes {sizes}")
    # A budget, not a timing: Preact and the shell fit in well under 40 kB; page code is lazy.
    assert total < 40_000, sizes
    chunks = {path.name for path in (web_assets / "assets").glob("plugin-*.js")}
    assert any(name.startswith("plugin-system-") for name in chunks)
    assert not any(name.startswith("plugin-") for name in initial)  # plugin pages load on demand


async def test_an_expired_access_cookie_is_refreshed(server, new_context):
    context = await new_context(server)
    await sign_up_api(context, "kim@example.org", "Kim")
    before = {cookie["name"]: cookie["value"] for cookie in await context.cookies()}
    # The browser drops the access cookie when it expires (its Max-Age is the token's lifetime).
    await context.clear_cookies(name="sygmax_access")
    page = await context.new_page()
    await page.goto("/settings")
    await expect(page.get_by_role("heading", name="Your settings")).to_be_visible()  # no detour to sign-in
    after = {cookie["name"]: cookie["value"] for cookie in await context.cookies()}
    assert after["sygmax_access"] and after["sygmax_refresh"] != before["sygmax_refresh"]  # rotated
    assert after["sygmax_csrf"] != before["sygmax_csrf"]  # bound to the new access token
    # And the new CSRF token is the one the page sends: an unsafe call from the page succeeds.
    profile = page.locator("form", has=page.get_by_role("heading", name="Profile"))
    await profile.get_by_label("Display name").fill("Kim Refreshed")
    await profile.get_by_role("button", name="Save profile").click()
    await expect(page.locator(".account-name")).to_have_text("Kim Refreshed")


async def test_settings_notification_preferences(server, new_context, db):
    context = await new_context(server)
    await sign_up_api(context, "nia@example.org", "Nia")
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto("/settings")
    section = page.locator("form", has=page.get_by_role("heading", name="Notifications"))
    mention_email = section.get_by_role("checkbox", name="Someone mentions you in a channel: e-mail")
    await expect(mention_email).to_be_checked()  # the chats plugin's default
    await mention_email.uncheck()
    await section.get_by_role("button", name="Save notifications").click()
    await expect(page.get_by_role("status").filter(has_text="Notification preferences saved")).to_be_visible()

    await page.reload()
    section = page.locator("form", has=page.get_by_role("heading", name="Notifications"))
    await expect(section.get_by_role("checkbox", name="Someone mentions you in a channel: e-mail")).not_to_be_checked()
    await expect(section.get_by_role("checkbox", name="Someone mentions you in a channel: in app")).to_be_checked()
    stored = await db.fetchrow(
        "SELECT p.in_app, p.email FROM sygmax_notification_pref p JOIN sygmax_user u ON u.id = p.user_id "
        "WHERE u.email = 'nia@example.org' AND p.category = 'chats.mention'")
    assert (stored["in_app"], stored["email"]) == (True, False)
    assert problems == []
