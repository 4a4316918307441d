"""The chats page in a real browser, against real server processes.

Two people in two browser contexts, each signed in on a different ``sygmax run api,realtime``
process (the same PostgreSQL and Redis), chat through the UI: what one does reaches the other
only through the database and Redis pub/sub across processes.
"""

from __future__ import annotations

import re

import pyvips
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import csrf_headers, page_problems, sign_up_api

XSS_FLAG = "window.__xss"
DISPLAY_NAME = "Mallory' onmouseover='alert(1)' x='"
# Each payload sets the window flag (and opens a dialog) if any part of it ever runs.
MESSAGE_PAYLOADS = [
    "<script>window.__xss = 1; alert('script')</script>",
    '<img src=x onerror="window.__xss = 1; alert(\'img\')">',
    "[click me](javascript:window.__xss=1;alert('link'))",
    '<svg><animate onbegin="window.__xss = 1" attributeName="x" dur="1s"></svg>',
    '<iframe srcdoc="<script>parent.__xss = 1</script>"></iframe>',
]


async def api_call(context: BrowserContext, method: str, path: str, data=None, expected: int = 200):
    """An API call with the context's cookies (and CSRF header on unsafe methods)."""
    headers = await csrf_headers(context) if method != "GET" else {}
    response = await context.request.fetch(path, method=method, data=data, headers=headers)
    assert response.status == expected, (method, path, response.status, await response.text())
    return await response.json() if response.status != 204 else None


async def two_people(servers, new_context, names=("Alice", "Bob"), **env: str):
    """Two server processes; Alice signed in on the first, Bob on the second, in one workspace."""
    first, second = await servers.start(2, **env)
    alice_context = await new_context(first)
    bob_context = await new_context(second)
    alice = await sign_up_api(alice_context, "alice@example.org", names[0])
    bob = await sign_up_api(bob_context, "bob@example.org", names[1])
    workspace = await api_call(alice_context, "POST", "/api/v1/workspaces", {"name": "Acme"}, 201)
    invite = await api_call(alice_context, "POST", f"/api/v1/workspaces/{workspace['id']}/invites",
                            {"role": "editor"}, 201)
    await api_call(bob_context, "POST", f"/api/v1/invites/{invite['token']}/accept")
    return (first, second), (alice_context, alice), (bob_context, bob), workspace


def watch_for_script(page: Page) -> list[str]:
    """Every dialog the page opens (alert, confirm, prompt): an executed payload would open one."""
    dialogs: list[str] = []

    async def record(dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    return dialogs


def message(page: Page, text: str):
    return page.get_by_role("log").locator("article").filter(has_text=text)


async def send(page: Page, text: str) -> None:
    box = page.locator("textarea.chats-input").first
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def test_two_people_on_two_processes_chat_react_edit_and_see_typing_and_presence(servers, new_context):
    _, (alice_context, _), (bob_context, _), workspace = await two_people(servers, new_context)
    alice_page = await alice_context.new_page()
    bob_page = await bob_context.new_page()
    problems = page_problems(alice_page) + page_problems(bob_page)

    # Alice creates a public channel through the dialog.
    await alice_page.goto("/chats")
    await alice_page.get_by_role("button", name="Create channel").click()
    dialog = alice_page.get_by_role("dialog", name="Create a channel")
    await dialog.get_by_label("Name", exact=True).fill("general")
    await dialog.get_by_role("button", name="Create", exact=True).click()
    await expect(alice_page.get_by_role("listbox", name="Channels").get_by_role("option", name="general")).to_be_visible()
    await expect(alice_page.get_by_role("heading", level=2, name="# general")).to_be_visible()

    # Bob finds it under other channels and joins.
    await bob_page.goto("/chats")
    await bob_page.get_by_role("listbox", name="Other channels").get_by_role("option", name="general").click()
    await bob_page.get_by_role("button", name="Join channel").click()
    await expect(bob_page.get_by_role("listbox", name="Channels").get_by_role("option", name="general")).to_be_visible()
    await expect(bob_page.get_by_role("log")).to_be_visible()

    # Typing shows on the other process's page, then the message arrives in order.
    await alice_page.locator("textarea.chats-input").fill("Hello **Bob**")
    await expect(bob_page.locator(".chats-typing")).to_have_text("Alice is typing…")
    await alice_page.locator("textarea.chats-input").press("Enter")
    hello = message(bob_page, "Hello Bob")
    await expect(hello).to_be_visible()
    await expect(hello.locator("strong", has_text="Bob")).to_be_visible()  # the Markdown rendered
    await expect(bob_page.locator(".chats-typing")).to_have_text("")

    await send(bob_page, "Hi Alice")
    await expect(message(alice_page, "Hi Alice")).to_be_visible()
    seqs = [int(value) for value in await alice_page.locator("[role=log] article").evaluate_all(
        "items => items.map(item => item.dataset.seq)")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 2

    # Presence: each sees the other online (a dot labelled by status beside the author).
    await expect(message(bob_page, "Hello Bob").get_by_role("img", name="online")).to_be_visible()
    await expect(message(alice_page, "Hi Alice").get_by_role("img", name="online")).to_be_visible()

    # Bob reacts to Alice's message; Alice sees the count.
    await hello.hover()
    await hello.get_by_role("button", name="Add reaction").click()
    await hello.get_by_role("button", name="React with 👍").click()
    await expect(message(alice_page, "Hello Bob").get_by_role("button", name=re.compile("👍 1"))).to_be_visible()

    # Alice edits her message; Bob sees the new text, marked edited.
    mine = message(alice_page, "Hello Bob")
    await mine.hover()
    await mine.get_by_role("button", name="Edit").click()
    editor = alice_page.get_by_label("Edit message")
    await editor.fill("Hello Bob, edited")
    await editor.press("Enter")
    edited = message(bob_page, "Hello Bob, edited")
    await expect(edited).to_be_visible()
    await expect(edited.locator(".chats-edited")).to_be_visible()
    await expect(edited.get_by_role("button", name=re.compile("👍 1"))).to_be_visible()  # the reaction survived

    # Alice leaves: Bob sees her go offline.
    await alice_page.close()
    await expect(edited.get_by_role("img", name="offline")).to_be_visible()
    assert not [problem for problem in problems if "WebSocket" not in problem], problems


async def test_xss_payloads_in_messages_names_and_filenames_stay_inert(servers, new_context):
    # Display names and channel names refuse < and > (and names quotes too), so their payloads
    # are attribute breakout attempts; message text and filenames carry markup.
    _, (alice_context, _), (bob_context, _), workspace = await two_people(
        servers, new_context, names=(DISPLAY_NAME, "Bob"))
    channel_name = "x\" onmouseover=\"window.__xss=1\" autofocus onfocus=\"alert('name')"
    channel = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                             {"workspace_id": workspace["id"], "name": channel_name}, 201)
    await api_call(bob_context, "POST", f"/api/v1/chats/channels/{channel['id']}/members",
                   {"user_id": (await api_call(bob_context, "GET", "/api/v1/users/me"))["id"]}, 204)
    filename = "<img src=x onerror=alert('file')>.txt"
    upload = await alice_context.request.post(
        f"/api/v1/chats/channels/{channel['id']}/attachments", headers=await csrf_headers(alice_context),
        multipart={"file": {"name": filename, "mimeType": "text/plain", "buffer": b"plain text"}})
    assert upload.status == 201, await upload.text()
    attachment = await upload.json()
    await api_call(alice_context, "POST", f"/api/v1/chats/channels/{channel['id']}/messages",
                   {"text": "see the file", "attachment_ids": [attachment["id"]]}, 201)
    for payload in MESSAGE_PAYLOADS:
        await api_call(alice_context, "POST", f"/api/v1/chats/channels/{channel['id']}/messages",
                       {"text": payload}, 201)

    page = await bob_context.new_page()
    dialogs = watch_for_script(page)
    await page.goto(f"/chats/{channel['id']}")
    log = page.get_by_role("log")
    await expect(log.locator("article")).to_have_count(len(MESSAGE_PAYLOADS) + 1)
    # The hostile names are shown as text, exactly as typed.
    await expect(page.get_by_role("option", name=channel_name)).to_be_visible()
    # The server stores the filename with its markup characters replaced; shown as text either way.
    await expect(log.get_by_text(attachment["filename"], exact=True)).to_be_visible()
    await expect(log.get_by_text(DISPLAY_NAME, exact=True).first).to_be_visible()
    # Interact the way a reader would: hover and focus everything, click the link.
    for item in await log.locator("article").all():
        await item.hover()
    await page.get_by_role("option", name=channel_name).focus()
    link = log.get_by_role("link", name="click me")
    if await link.count():
        await link.click()
    assert await page.evaluate(XSS_FLAG) is None
    assert await log.locator("script, iframe, svg, img[onerror]").count() == 0
    assert dialogs == []
    # A new message arriving live goes through the same rendering.
    await api_call(alice_context, "POST", f"/api/v1/chats/channels/{channel['id']}/messages",
                   {"text": "<img src=x onerror=\"window.__xss=1; alert('live')\"> live"}, 201)
    await expect(log.locator("article").filter(has_text="live")).to_be_visible()
    assert await page.evaluate(XSS_FLAG) is None
    assert dialogs == []


async def test_a_non_member_cannot_see_a_private_channel(servers, new_context):
    _, (alice_context, _), (bob_context, _), workspace = await two_people(servers, new_context)
    secret = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                            {"workspace_id": workspace["id"], "name": "secret-plans", "private": True}, 201)
    await api_call(alice_context, "POST", f"/api/v1/chats/channels/{secret['id']}/messages",
                   {"text": "the launch date is Friday"}, 201)
    public = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                            {"workspace_id": workspace["id"], "name": "lobby"}, 201)

    page = await bob_context.new_page()
    await page.goto("/chats")
    await expect(page.get_by_role("option", name="lobby")).to_be_visible()
    await expect(page.get_by_role("option", name="secret-plans")).to_have_count(0)
    # Straight to its address: no name, no messages, an explanation.
    await page.goto(f"/chats/{secret['id']}")
    await expect(page.get_by_text("This conversation does not exist or you cannot see it")).to_be_visible()
    await expect(page.get_by_text("the launch date is Friday")).to_have_count(0)
    await expect(page.get_by_text("secret-plans")).to_have_count(0)
    # Search does not find it either.
    await page.get_by_label("Search messages").fill("launch")
    await page.get_by_label("Search messages").press("Enter")
    await expect(page.get_by_role("complementary", name="Search results").get_by_role("status")).to_have_text(
        "No messages found.")
    assert public["id"] != secret["id"]


async def test_an_oversized_message_shows_a_clear_error_and_keeps_the_draft(servers, new_context):
    server = (await servers.start(1, SYGMAX_CHATS_MAX_MESSAGE_CHARS="100"))[0]
    context = await new_context(server)
    await sign_up_api(context, "alice@example.org", "Alice")
    workspace = await api_call(context, "POST", "/api/v1/workspaces", {"name": "Acme"}, 201)
    channel = await api_call(context, "POST", "/api/v1/chats/channels",
                             {"workspace_id": workspace["id"], "name": "general"}, 201)
    page = await context.new_page()
    await page.goto(f"/chats/{channel['id']}")
    long_text = "word " * 60
    box = page.locator("textarea.chats-input")
    await box.fill(long_text)
    await box.press("Enter")
    alert = page.locator(".chats-composer").get_by_role("alert")
    await expect(alert).to_contain_text("100")
    await expect(box).to_have_value(long_text)
    await expect(page.get_by_role("log").locator("article")).to_have_count(0)
    # A message within the limit goes through, and the error is gone.
    await send(page, "short")
    await expect(page.get_by_role("log").locator("article")).to_have_count(1)
    await expect(alert).to_have_count(0)


async def test_history_unread_threads_pins_search_files_and_direct_messages(servers, new_context):
    _, (alice_context, alice), (bob_context, bob), workspace = await two_people(
        servers, new_context, SYGMAX_CHATS_MESSAGES_PER_MINUTE="1000")
    general = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                             {"workspace_id": workspace["id"], "name": "general"}, 201)
    lobby = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                           {"workspace_id": workspace["id"], "name": "lobby"}, 201)
    for channel in (general, lobby):
        await api_call(bob_context, "POST", f"/api/v1/chats/channels/{channel['id']}/members",
                       {"user_id": bob["id"]}, 204)
    for number in range(120):
        await api_call(alice_context, "POST", f"/api/v1/chats/channels/{general['id']}/messages",
                       {"text": f"message {number}"}, 201)
    await api_call(alice_context, "POST", f"/api/v1/chats/channels/{general['id']}/messages",
                   {"text": "a ripe banana"}, 201)

    bob_page = await bob_context.new_page()
    problems = page_problems(bob_page)
    await bob_page.goto(f"/chats/{lobby['id']}")
    channels = bob_page.get_by_role("listbox", name="Channels")
    await expect(channels.get_by_role("option", name="general")).to_contain_text("121")
    await expect(channels.get_by_label("121 unread")).to_be_visible()

    # Opening the channel shows the newest page and clears the unread count; scrolling up loads
    # older pages, in order, until the first message.
    await channels.get_by_role("option", name="general").click()
    log = bob_page.get_by_role("log", name="Messages in general")
    await expect(log.get_by_text("a ripe banana", exact=True)).to_be_visible()
    await expect(log.get_by_text("message 0", exact=True)).to_have_count(0)
    await expect(channels.get_by_label("121 unread")).to_have_count(0)
    for _ in range(5):
        if await log.get_by_text("message 0", exact=True).count():
            break
        shown = await log.locator("article").count()
        await log.evaluate("element => { element.scrollTop = 0; element.dispatchEvent(new Event('scroll')); }")
        await expect(log.locator("article")).not_to_have_count(shown)
    await expect(log.locator("article")).to_have_count(121)
    seqs = await log.locator("article").evaluate_all("items => items.map(item => Number(item.dataset.seq))")
    assert seqs == list(range(1, 122))
    general_unread = await api_call(bob_context, "GET", f"/api/v1/chats/unread?workspace_id={workspace['id']}")
    assert {item["channel_id"]: item["unread"] for item in general_unread}[general["id"]] == 0

    alice_page = await alice_context.new_page()
    await alice_page.goto(f"/chats/{general['id']}")
    alice_log = alice_page.get_by_role("log", name="Messages in general")
    await expect(alice_log.get_by_text("a ripe banana", exact=True)).to_be_visible()

    # A thread reply: Bob answers in the thread panel; Alice's copy of the root counts it.
    root = message(bob_page, "a ripe banana")
    await root.hover()
    await root.get_by_role("button", name="Reply in thread").click()
    thread = bob_page.get_by_role("complementary", name="Thread")
    await thread.get_by_role("textbox", name="Reply in thread").fill("yes, very ripe")
    await thread.get_by_role("textbox", name="Reply in thread").press("Enter")
    await expect(thread.get_by_role("log", name="Replies").get_by_text("yes, very ripe")).to_be_visible()
    await expect(message(alice_page, "a ripe banana").get_by_role("button", name="Thread, 1 reply")).to_be_visible()
    await expect(log.get_by_text("yes, very ripe")).to_have_count(0)  # replies stay in the thread
    await bob_page.keyboard.press("Escape")
    await expect(thread).to_have_count(0)

    # Pins: Bob pins a message, Alice sees the flag and finds it in the pinned panel.
    pinned = message(bob_page, "message 118")
    await pinned.hover()
    await pinned.get_by_role("button", name="Pin").click()
    await expect(message(alice_page, "message 118").locator(".chats-pinned-flag")).to_be_visible()
    await alice_page.get_by_role("button", name="Pinned").click()
    await expect(alice_page.get_by_role("complementary", name="Pinned messages").get_by_text("message 118")).to_be_visible()

    # Search is stemmed: "bananas" finds "banana".
    await bob_page.keyboard.press("Control+k")
    await expect(bob_page.get_by_label("Search messages")).to_be_focused()
    await bob_page.keyboard.type("bananas")
    await bob_page.keyboard.press("Enter")
    results = bob_page.get_by_role("complementary", name="Search results")
    await expect(results.get_by_role("link").filter(has_text="a ripe banana")).to_be_visible()

    # An image attachment: uploaded from the composer, shown to Alice as a thumbnail.
    image = pyvips.Image.black(64, 48).draw_rect(255, 8, 8, 20, 20, fill=True).pngsave_buffer()
    await bob_page.locator("input[type=file]").first.set_input_files(
        {"name": "diagram.png", "mimeType": "image/png", "buffer": image})
    await expect(bob_page.get_by_role("list", name="Files to send").get_by_text("diagram.png")).to_be_visible()
    await bob_page.locator("textarea.chats-input").first.fill("the diagram")
    await bob_page.locator("textarea.chats-input").first.press("Enter")
    picture = message(alice_page, "the diagram").get_by_role("img", name="diagram.png")
    await expect(picture).to_be_visible()
    # Loaded through the access-checked thumbnail route (a broken image has no natural width).
    await alice_page.wait_for_function("image => image.complete && image.naturalWidth > 0",
                                       arg=await picture.element_handle())

    # A direct message: Alice starts it from the dialog; Bob gets it with an unread count.
    await alice_page.get_by_role("button", name="New direct message").click()
    dialog = alice_page.get_by_role("dialog", name="Direct message")
    await dialog.get_by_label("Bob").check()
    await dialog.get_by_role("button", name="Start").click()
    await expect(alice_page.get_by_role("listbox", name="Direct messages").get_by_role("option", name="Bob")).to_be_visible()
    await send(alice_page, "psst, Bob")
    direct = bob_page.get_by_role("listbox", name="Direct messages").get_by_role("option", name=re.compile("Alice"))
    await expect(direct).to_be_visible()
    await expect(direct.get_by_label("1 unread")).to_be_visible()
    await direct.click()
    await expect(message(bob_page, "psst, Bob")).to_be_visible()
    # Keyboard: Alt+Up and Alt+Down move between conversations.
    direct_url = bob_page.url
    await bob_page.keyboard.press("Alt+ArrowUp")
    await expect(bob_page).not_to_have_url(direct_url)
    await expect(bob_page.get_by_role("log", name="Messages in Alice")).to_have_count(0)
    await bob_page.keyboard.press("Alt+ArrowDown")
    await expect(bob_page).to_have_url(direct_url)
    await expect(message(bob_page, "psst, Bob")).to_be_visible()
    assert not [problem for problem in problems if "WebSocket" not in problem], problems
    assert alice["id"] != bob["id"]


async def test_a_killed_realtime_process_costs_the_page_nothing(servers, new_context):
    """The page's socket goes to a second process (listed first in the socket URLs, the shell's
    override); that process is killed while messages keep being posted; the page reconnects
    to the other process and shows every message once, in order."""
    # Behind Caddy every socket is same-origin; here the processes are addressed directly, so
    # the page's policy lets it connect to its sibling (an operator setting, not a code path).
    first, second = await servers.start(2, SYGMAX_GATEWAY_CONTENT_SECURITY_POLICY=(
        "default-src 'self'; connect-src 'self' ws://127.0.0.1:*; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'; object-src 'none'"))
    alice_context = await new_context(first)
    bob_context = await new_context(first)
    await sign_up_api(alice_context, "alice@example.org", "Alice")
    bob = await sign_up_api(bob_context, "bob@example.org", "Bob")
    workspace = await api_call(alice_context, "POST", "/api/v1/workspaces", {"name": "Acme"}, 201)
    invite = await api_call(alice_context, "POST", f"/api/v1/workspaces/{workspace['id']}/invites",
                            {"role": "editor"}, 201)
    await api_call(bob_context, "POST", f"/api/v1/invites/{invite['token']}/accept")
    channel = await api_call(alice_context, "POST", "/api/v1/chats/channels",
                             {"workspace_id": workspace["id"], "name": "general"}, 201)
    await api_call(bob_context, "POST", f"/api/v1/chats/channels/{channel['id']}/members", {"user_id": bob["id"]}, 204)
    urls = [f"{second.ws_url}/ws/chats", f"{first.ws_url}/ws/chats"]
    await bob_context.add_init_script(f"localStorage.setItem('sygmax.ws.chats', JSON.stringify({urls!r}))")

    page = await bob_context.new_page()
    problems = page_problems(page)
    await page.goto(f"/chats/{channel['id']}")
    status = page.locator(".chats-connection")
    await expect(status).to_have_text("Connected")
    post = f"/api/v1/chats/channels/{channel['id']}/messages"
    await api_call(alice_context, "POST", post, {"text": "before the crash"}, 201)
    await expect(message(page, "before the crash")).to_be_visible()

    second.kill()
    for number in range(5):
        await api_call(alice_context, "POST", post, {"text": f"while away {number}"}, 201)
    await expect(status).to_have_text("Connected")
    await api_call(alice_context, "POST", post, {"text": "after the crash"}, 201)
    await expect(message(page, "after the crash")).to_be_visible()
    log = page.get_by_role("log")
    await expect(log.locator("article")).to_have_count(7)
    seqs = await log.locator("article").evaluate_all("items => items.map(item => Number(item.dataset.seq))")
    assert seqs == list(range(1, 8))
    assert not [problem for problem in problems if "WebSocket" not in problem], problems


async def test_the_page_fits_a_phone_and_follows_the_dark_theme(servers, new_context):
    server = await servers.one()
    context = await new_context(server, viewport={"width": 375, "height": 740}, color_scheme="dark")
    await sign_up_api(context, "alice@example.org", "Alice")
    workspace = await api_call(context, "POST", "/api/v1/workspaces", {"name": "Acme"}, 201)
    channel = await api_call(context, "POST", "/api/v1/chats/channels",
                             {"workspace_id": workspace["id"], "name": "a-channel-with-a-rather-long-name"}, 201)
    await api_call(context, "POST", f"/api/v1/chats/channels/{channel['id']}/messages",
                   {"text": "a long line " + "x" * 300}, 201)
    page = await context.new_page()
    await page.goto(f"/chats/{channel['id']}")
    await expect(message(page, "a long line")).to_be_visible()
    await expect(page.locator("textarea.chats-input")).to_be_in_viewport()
    # Nothing wider than the screen: no sideways scrolling.
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    # Colours come from the shell's dark theme variables.
    colours = await page.evaluate("""() => {
        const log = getComputedStyle(document.querySelector('.chats-log'));
        const root = getComputedStyle(document.documentElement);
        return [document.documentElement.dataset.theme, log.color, root.getPropertyValue('--fg').trim()];
    }""")
    assert colours[0] == "dark" and colours[1] == "rgb(232, 234, 237)" and colours[2] == "#e8eaed", colours
    # Keyboard: the message box is reachable and sends with Enter.
    await page.locator("textarea.chats-input").focus()
    await page.keyboard.type("typed on a phone")
    await page.keyboard.press("Enter")
    await expect(message(page, "typed on a phone")).to_be_visible()
