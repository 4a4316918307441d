"""Attachments: stored in the kernel's object storage, typed by their bytes, thumbnailed by pyvips.

The content type a client declares is not believed: it is sniffed from the bytes (puremagic;
UTF-8 text as text/plain), and only the raster formats browsers show safely are served
inline (PNG, JPEG, GIF, WebP). Everything else, SVG and HTML included, downloads as a file
with ``Content-Disposition: attachment`` and a sandboxing CSP, so an upload can never run
script in the application's origin. Filenames are reduced to a safe display form; the storage
key never contains them.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
import uuid

import puremagic
import pyvips
import structlog

from plugins.chats.access import access_channel
from plugins.chats.runtime import runtime
from plugins.chats.views import AttachmentOut
from sygmax.auth.tokens import Actor
from sygmax.errors import Problem

log = structlog.get_logger("sygmax.chats")

INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_THUMBNAIL_PIXELS = 100_000_000  # decompression bombs: larger images are stored without a thumbnail
_UNSAFE = re.compile(r'[<>:"/\\|?*`$&;\']')


def clean_filename(name: str) -> str:
    """A display filename: last path segment, no control or format characters (bidi overrides),
    no characters that mean something to a shell, HTML or a file system; at most 200 characters."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] not in ("C", "Z") or char == " ")
    name = _UNSAFE.sub("_", name).strip(" .")
    return name[:200] or "file"


def sniff(data: bytes) -> str:
    """The content type the bytes say they are (never what the client declared)."""
    try:
        found = puremagic.from_string(data[:8192], mime=True)
    except (puremagic.PureError, ValueError):
        found = ""
    if found:
        return found
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def thumbnail(data: bytes, size: int) -> tuple[int, int, bytes] | None:
    """(width, height, WebP thumbnail without metadata), or None when the bytes are not a usable image."""
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = header.width, header.height
        if width * height > MAX_THUMBNAIL_PIXELS:
            return None
        image = pyvips.Image.thumbnail_buffer(data, size, height=size, size="down")
        return width, height, image.write_to_buffer(".webp[Q=80,strip]")
    except pyvips.Error as exc:
        log.info("chats_thumbnail_failed", error=str(exc)[:200])
        return None


async def check_upload(actor: Actor, kernel, channel_id: uuid.UUID, *, filename: str, data: bytes) -> AttachmentOut:
    chats = runtime(kernel)
    limit = chats.settings.max_attachment_bytes
    if len(data) > limit:
        raise Problem(413, "attachment-too-large", f"An attachment may be at most {limit} bytes", field="file",
                      limit=limit)
    async with kernel.db.pool.acquire() as connection:
        found = await access_channel(connection, actor, channel_id, "chats.post")
    content_type = sniff(data)
    attachment_id = uuid.uuid4()
    key = f"chats/{found.workspace_id}/{channel_id}/{attachment_id}"
    width = height = None
    thumbnail_key = None
    if content_type in INLINE_IMAGES:
        made = await asyncio.to_thread(thumbnail, data, chats.settings.thumbnail_px)
        if made is not None:
            width, height, thumb = made
            thumbnail_key = key + ".thumb.webp"
            await kernel.storage.put(thumbnail_key, thumb, content_type="image/webp")
    await kernel.storage.put(key, data, content_type=content_type)
    name = clean_filename(filename)
    async with kernel.db.pool.acquire() as connection:
        await connection.execute(
            """INSERT INTO chats_attachment (id, workspace_id, channel_id, uploader_id, storage_key, filename,
                                             content_type, size, width, height, thumbnail_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            attachment_id, found.workspace_id, channel_id, actor.user_id, key, name, content_type, len(data),
            width, height, thumbnail_key)
    return AttachmentOut(attachment_id, channel_id, name, content_type, len(data), width, height,
                         thumbnail_key is not None, None)


def download_headers(filename: str, content_type: str) -> dict[str, str]:
    """Headers that keep a download inert: inline only for safe raster images, sandboxed (the gateway's
    security headers add ``X-Content-Type-Options: nosniff`` to every answer)."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = "inline" if content_type in INLINE_IMAGES else "attachment"
    return {
        "content-disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
        "content-security-policy": "default-src 'none'; sandbox",
        "cache-control": "private, max-age=3600",
    }


__all__ = ["INLINE_IMAGES", "check_upload", "clean_filename", "download_headers", "sniff", "thumbnail"]
