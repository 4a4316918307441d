"""The feeds module: RSS/Atom/JSON Feed subscriptions, polite polling, reading, filters,
search, OPML, digests, and the Google Reader API for existing clients."""

from pathlib import Path

from sygmax.events.contracts import AiAnnotationReady
from sygmax.plugins import ConsumerSpec, NotificationCategory, Permission, Plugin, Schedule, UIPage

from plugins.feeds.api import HANDLERS
from plugins.feeds.digest import send_due_digests
from plugins.feeds.greader import HANDLERS as GREADER_HANDLERS
from plugins.feeds.models import TABLES
from plugins.feeds.settings import FeedsSettings
from plugins.feeds.workers import FeedsRefreshDue, annotation_ready, apply_retention, enqueue_due, refresh_batch

plugin = Plugin(
    name="feeds",
    version="1",
    description="RSS, Atom and JSON Feed reader: subscriptions, folders, filters, search, OPML, digests, "
                "Google Reader API",
    http_handlers=[*HANDLERS, *GREADER_HANDLERS],
    tables=TABLES,
    migrations=Path(__file__).parent / "migrations",
    consumers=[
        ConsumerSpec("refresh", {FeedsRefreshDue: refresh_batch}),
        ConsumerSpec("annotations", {AiAnnotationReady: annotation_ready}),
    ],
    schedules=[
        Schedule("poll", enqueue_due, seconds=30),
        Schedule("digest", send_due_digests, cron="7 * * * *"),
        Schedule("retention", apply_retention, cron="23 3 * * *"),
    ],
    permissions=[
        Permission("feeds.read", "Read the workspace's shared feeds", default_roles=("editor", "viewer")),
        Permission("feeds.manage", "Add, change and remove the workspace's shared feeds"),
    ],
    settings=FeedsSettings,
    ui_pages=[UIPage("/feeds", "Feeds", icon="rss")],
    notification_categories=[NotificationCategory("feeds.digest", "The periodic digest of new feed items", ("email",))],
)
