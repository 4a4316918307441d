"""The ``[feeds]`` settings section (env ``SYGMAX_FEEDS_<KEY>``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from sygmax.config import Section


class FeedsSettings(Section):
    allow_private_addresses: bool = Field(
        False, description="fetch feeds on loopback/private/link-local addresses (SSRF guard off); labs and "
                           "intranets only")
    private_hosts: list[str] = Field(
        default_factory=list, description="host names whose private addresses may be fetched even with the guard "
                                          "on (an intranet feed server); exact names, no wildcards")
    min_interval_s: int = Field(900, ge=1, description="never poll one feed more often than this")
    max_interval_s: int = Field(86_400, ge=60, description="poll every feed at least this often")
    default_interval_s: int = Field(3600, ge=1, description="when the feed names no TTL or max-age")
    max_backoff_s: int = Field(86_400, ge=60, description="longest wait after repeated errors")
    timeout_s: float = Field(20.0, gt=0, le=300, description="connect/read timeout of one request")
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="larger feeds are abandoned")
    per_host_concurrency: int = Field(4, ge=1, le=100, description="simultaneous requests to one host per worker")
    fetch_concurrency: int = Field(100, ge=1, le=1000, description="simultaneous fetches per worker process")
    # Large batches: a worker finishes a batch when its slowest feed is done, so small ones leave
    # it idle behind stragglers (bench/feeds_refresh.py: 50 -> 200 doubled the throughput).
    batch_size: int = Field(200, ge=1, le=1000, description="feeds per refresh event on the bus")
    max_due_per_tick: int = Field(20_000, ge=1, description="feeds the scheduler enqueues per tick")
    retention_days: int = Field(90, ge=1, description="items older than this are deleted (never starred ones)")
    max_subscriptions: int = Field(5000, ge=1, description="per user")
    opml_max_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    digest_max_items: int = Field(50, ge=1, le=1000)
    greader_session_days: int = Field(365, ge=1, description="lifetime of a Google Reader API login")

    @model_validator(mode="after")
    def _intervals(self) -> "FeedsSettings":
        if self.min_interval_s > self.max_interval_s:
            raise ValueError("min_interval_s must not exceed max_interval_s")
        return self


def feeds_settings(kernel) -> FeedsSettings:
    """The validated section, or the defaults when the process loaded settings without it."""
    section = kernel.settings.plugin_sections.get("feeds")
    return section if isinstance(section, FeedsSettings) else FeedsSettings()
