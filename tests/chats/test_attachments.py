"""Attachments: kernel object storage (local disk here), sniffed types, pyvips thumbnails,
inert filenames and downloads, size limit, access checks."""

from __future__ import annotations

import struct
import zlib

import pyvips

from tests.chats.conftest import channel, make_team, post

C = "/api/v1/chats/channels"
A = "/api/v1/chats/attachments"


def png(width: int = 640, height: int = 480, comment: str | None = None) -> bytes:
    """A PNG image; ``comment`` goes into a tEXt chunk, metadata a thumbnail must not carry along."""
    data = (pyvips.Image.black(width, height, bands=3) + [200, 30, 60]).cast("uchar").write_to_buffer(".png")
    if comment is None:
        return data
    body = b"tEXt" + b"Author\x00" + comment.encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[:-12] + chunk + data[-12:]  # before IEND


async def upload(api, user, channel_id: str, filename: str, data: bytes, content_type: str = "image/png"):
    return await api.client.post(f"{C}/{channel_id}/attachments", files={"file": (filename, data, content_type)},
                                 headers=user.headers)


async def test_image_upload_gets_a_stripped_thumbnail_and_travels_with_a_message(api, team, db):
    ch = await channel(api, team.alice, team)
    original = png(comment="secret-author")
    assert b"secret-author" in original
    response = await upload(api, team.alice, ch["id"], "holiday.png", original)
    assert response.status_code == 201, response.text
    attachment = response.json()
    assert (attachment["content_type"], attachment["size"], attachment["width"], attachment["height"]) == (
        "image/png", len(original), 640, 480)
    assert attachment["has_thumbnail"] and attachment["message_id"] is None
    # Until a message carries it, only the uploader can fetch it.
    await api.problem(team.bob, "GET", f"{A}/{attachment['id']}", 404, "not-found")
    message = await post(api, team.alice, ch["id"], "look", attachment_ids=[attachment["id"]])
    assert [item["id"] for item in message["attachments"]] == [attachment["id"]]
    assert message["attachments"][0]["message_id"] == message["id"]

    download = await api.client.get(f"{A}/{attachment['id']}", headers=team.victor.headers)
    assert download.status_code == 200 and download.content == original
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"].startswith("inline;")
    assert download.headers["x-content-type-options"] == "nosniff"

    thumb = await api.client.get(f"{A}/{attachment['id']}/thumbnail", headers=team.bob.headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    image = pyvips.Image.new_from_buffer(thumb.content, "")
    assert (image.width, image.height) == (320, 240)
    assert b"secret-author" not in thumb.content  # metadata stripped
    # Used once: a second message cannot claim it.
    await api.problem(team.alice, "POST", f"{C}/{ch['id']}/messages", 404, "not-found",
                      json={"text": "again", "attachment_ids": [attachment["id"]]})
    # Deleting the message deletes the file.
    await api.ok(team.alice, "DELETE", f"/api/v1/chats/messages/{message['id']}")
    await api.problem(team.alice, "GET", f"{A}/{attachment['id']}", 404, "not-found")
    assert await db.fetchval("SELECT count(*) FROM chats_attachment") == 0


async def test_declared_types_are_not_believed_and_filenames_are_inert(api, team):
    ch = await channel(api, team.alice, team)
    page = b"<html><body><script>alert(document.cookie)</script></body></html>"
    response = await upload(api, team.alice, ch["id"], "../../<script>alert(1)</script>\u202egnp.html", page,
                            content_type="image/png")
    assert response.status_code == 201, response.text
    attachment = response.json()
    assert attachment["content_type"] == "text/html" and not attachment["has_thumbnail"]
    name = attachment["filename"]
    assert not any(char in name for char in "<>/\\\u202e"), name
    only_file = await post(api, team.alice, ch["id"], "", attachment_ids=[attachment["id"]])  # no text needed
    assert only_file["text"] == "" and len(only_file["attachments"]) == 1
    download = await api.client.get(f"{A}/{attachment['id']}", headers=team.bob.headers)
    assert download.status_code == 200 and download.content == page
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["content-security-policy"]
    await api.problem(team.bob, "GET", f"{A}/{attachment['id']}/thumbnail", 404, "not-found")
    # Not an image after all: stored, typed by its bytes, no thumbnail.
    fake = await upload(api, team.alice, ch["id"], "broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert fake.status_code == 201 and not fake.json()["has_thumbnail"]


async def test_uploads_are_size_limited_and_access_checked(chat_api, example_user, db, tmp_path):
    async with chat_api(SYGMAX_CHATS_MAX_ATTACHMENT_BYTES="2048", SYGMAX_CHATS_MESSAGES_PER_MINUTE="1000") as api:
        team = await make_team(api, example_user)
        ch = await channel(api, team.alice, team)
        secret = await channel(api, team.alice, team, "secret", private=True)
        too_big = await upload(api, team.alice, ch["id"], "big.bin", b"x" * 3000, "application/octet-stream")
        assert too_big.status_code == 413 and too_big.json()["type"].endswith("/attachment-too-large")
        outsider = await upload(api, team.bob, secret["id"], "x.txt", b"hello", "text/plain")
        assert outsider.status_code == 404 and outsider.json()["type"].endswith("/not-found")
        viewer = await upload(api, team.victor, ch["id"], "x.txt", b"hello", "text/plain")
        assert viewer.status_code == 403
        missing = await api.client.post(f"{C}/{ch['id']}/attachments", headers=team.alice.headers,
                                        files={"other": ("x.txt", b"hello", "text/plain")})
        assert missing.status_code == 400
        assert await db.fetchval("SELECT count(*) FROM chats_attachment") == 0
        stored = [path for path in (tmp_path / "objects").rglob("*") if path.is_file()]
        assert stored == []
        ok = await upload(api, team.alice, ch["id"], "notes.txt", "grüße\n".encode(), "application/x-evil")
        assert ok.status_code == 201 and ok.json()["content_type"] == "text/plain"
        await post(api, team.alice, secret["id"], "secret file", attachment_ids=[])
        hidden = await upload(api, team.alice, secret["id"], "plan.txt", b"the plan", "text/plain")
        message = await post(api, team.alice, secret["id"], "plan", attachment_ids=[hidden.json()["id"]])
        assert message["attachments"][0]["filename"] == "plan.txt"
        await api.problem(team.bob, "GET", f"{A}/{hidden.json()['id']}", 404, "not-found")
