"""Piccolo tables of the feeds module (the schema itself is plugins/feeds/migrations/).

The module queries with SQL through the kernel's asyncpg pool (set-based inserts with
``unnest``, ``ON CONFLICT`` de-duplication, the read-state joins); these declarations bind
the tables to the process's engine and name their columns for anyone using the ORM.
"""

from __future__ import annotations

from piccolo.columns import (UUID, Array, BigInt, Boolean, Bytea, Integer, Text, Timestamptz, Varchar)
from piccolo.table import Table


class FeedsFeed(Table, tablename="feeds_feed"):
    id = UUID(primary_key=True)
    url = Text(unique=True)
    site_url = Text(null=True)
    title = Text()
    language = Text(null=True)
    etag = Text(null=True)
    last_modified = Text(null=True)
    next_poll_at = Timestamptz()
    last_polled_at = Timestamptz(null=True)
    last_success_at = Timestamptz(null=True)
    error_count = Integer()
    last_error = Text(null=True)
    created_at = Timestamptz()


class FeedsItem(Table, tablename="feeds_item"):
    id = UUID(primary_key=True)
    seq = BigInt(unique=True)
    feed_id = UUID()
    dedupe_key = Text()
    content_hash = Bytea()
    guid = Text(null=True)
    url = Text(null=True)
    title = Text()
    author = Text()
    content_html = Text()
    content_text = Text()
    published_at = Timestamptz()
    fetched_at = Timestamptz()
    ai_summary = Text(null=True)
    ai_tags = Array(Text())


class FeedsFolder(Table, tablename="feeds_folder"):
    id = UUID(primary_key=True)
    user_id = UUID(null=True)
    workspace_id = UUID(null=True)
    name = Varchar(length=100)
    created_at = Timestamptz()


class FeedsSubscription(Table, tablename="feeds_subscription"):
    id = UUID(primary_key=True)
    feed_id = UUID()
    user_id = UUID(null=True)
    workspace_id = UUID(null=True)
    folder_id = UUID(null=True)
    title = Text(null=True)
    annotate = Boolean()
    created_by = UUID(null=True)
    created_at = Timestamptz()


class FeedsRule(Table, tablename="feeds_rule"):
    id = UUID(primary_key=True)
    user_id = UUID()
    subscription_id = UUID(null=True)
    field = Text()
    keyword = Text()
    action = Text()
    tag = Text(null=True)
    created_at = Timestamptz()


class FeedsPreference(Table, tablename="feeds_preference"):
    user_id = UUID(primary_key=True)
    digest = Text()
    digest_sent_at = Timestamptz(null=True)
    api_password = Text(null=True)


TABLES = [FeedsFeed, FeedsItem, FeedsFolder, FeedsSubscription, FeedsRule, FeedsPreference]
