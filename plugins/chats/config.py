"""The ``[chats]`` settings section (environment: ``SYGMAX_CHATS_<KEY>``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from sygmax.config import Section


class ChatsSettings(Section):
    max_message_chars: int = Field(10_000, ge=1, le=1_000_000, description="longer messages get 413")
    messages_per_minute: int = Field(60, ge=1, description="per user, across channels and processes; then 429")
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024,
                                      description="larger uploads get 413 (the upload route accepts bodies up "
                                                  "to 256 MiB whatever server.max_request_body says)")
    thumbnail_px: int = Field(320, ge=16, le=2048, description="longest side of image thumbnails")
    search_language: str = Field("english", description="PostgreSQL text search configuration for stemming")
    send_queue_frames: int = Field(1024, ge=1, le=1_000_000,
                                   description="frames queued for one WebSocket before it is closed as too slow")
    presence_ttl_s: float = Field(30.0, ge=2.0, description="a connection not refreshed for this long is offline")
    heartbeat_s: float = Field(10.0, ge=0.5, description="how often each process refreshes its connections' presence")
    catchup_limit: int = Field(5000, ge=1, description="most messages a resuming subscription is sent from the database")
    presence_broadcast_max: int = Field(100, ge=0, description="workspaces with at most this many members send "
                                                              "everyone's presence to everyone; larger ones only "
                                                              "what each connection asked for (presence_subscribe)")

    @field_validator("search_language")
    @classmethod
    def _language(cls, value: str) -> str:
        # A regconfig name is an identifier; the database checks that it exists on first use.
        if not value.isidentifier() or len(value) > 63:
            raise ValueError("must be a PostgreSQL text search configuration name such as english or simple")
        return value
