"""Piccolo tables of the chats module (schema in migrations/0001_chats.sql).

The hot paths (posting, history, fan-out catch-up) use raw SQL through the pool because they
need ``UPDATE ... RETURNING`` under a row lock and PostgreSQL types piccolo does not model
(``regconfig``, the generated ``tsvector``); these classes name the tables for the kernel and
for scripts that want the ORM. The search columns are left out on purpose, and so are the
link tables with composite primary keys (chats_member, chats_reaction, chats_pin), which
piccolo cannot model without inventing an ``id`` column they do not have.
"""

from piccolo.columns import UUID, Array, BigInt, Boolean, Integer, Text, Timestamptz
from piccolo.table import Table


class Channel(Table, tablename="chats_channel"):
    id = UUID(primary_key=True)
    workspace_id = UUID()
    kind = Text()
    name = Text()
    topic = Text(default="")
    private = Boolean(default=False)
    direct_key = Text(null=True, default=None)
    last_seq = BigInt(default=0)
    created_by = UUID(null=True, default=None)
    created_at = Timestamptz()


class Message(Table, tablename="chats_message"):
    id = UUID(primary_key=True)
    channel_id = UUID()
    workspace_id = UUID()
    seq = BigInt()
    author_id = UUID(null=True, default=None)
    thread_root_id = UUID(null=True, default=None)
    text = Text()
    html = Text()
    mentions = Array(UUID())
    mention_channel = Boolean(default=False)
    reply_count = Integer(default=0)
    version = Integer(default=1)
    idempotency_key = Text(null=True, default=None)
    created_at = Timestamptz()
    edited_at = Timestamptz(null=True, default=None)
    deleted_at = Timestamptz(null=True, default=None)


class MessageEdit(Table, tablename="chats_message_edit"):
    id = BigInt(primary_key=True)
    message_id = UUID()
    text = Text()
    html = Text()
    edited_by = UUID(null=True, default=None)
    replaced_at = Timestamptz()


class Attachment(Table, tablename="chats_attachment"):
    id = UUID(primary_key=True)
    workspace_id = UUID()
    channel_id = UUID()
    uploader_id = UUID(null=True, default=None)
    message_id = UUID(null=True, default=None)
    storage_key = Text()
    filename = Text()
    content_type = Text()
    size = BigInt()
    width = Integer(null=True, default=None)
    height = Integer(null=True, default=None)
    thumbnail_key = Text(null=True, default=None)
    created_at = Timestamptz()


TABLES = (Channel, Message, MessageEdit, Attachment)
