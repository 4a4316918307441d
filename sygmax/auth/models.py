"""Piccolo tables of the identity core (schema in sygmax/db/migrations/0001_identity_core.sql)."""

from piccolo.columns import UUID, Array, Boolean, Bytea, ForeignKey, Text, Timestamptz
from piccolo.table import Table


class User(Table, tablename="sygmax_user"):
    id = UUID(primary_key=True)
    email = Text()
    display_name = Text()
    is_admin = Boolean(default=False)
    is_active = Boolean(default=True)
    created_at = Timestamptz()


class ApiToken(Table, tablename="sygmax_api_token"):
    id = UUID(primary_key=True)
    user_id = ForeignKey(User)
    name = Text()
    token_hash = Bytea()
    scopes = Array(Text())
    created_at = Timestamptz()
    expires_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)


KERNEL_TABLES = (User, ApiToken)
