"""Audit log: append-only at the database, and any hand edit detected by the hash chain."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from sygmax.auth.audit import Source, record, verify_chain


@pytest.fixture
async def connection(database_url):
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def fill(connection, count: int = 5) -> uuid.UUID:
    actor = uuid.uuid4()
    for number in range(count):
        await record(connection, actor_id=actor, action="note.create", object_type="note",
                     object_id=uuid.uuid4(), source=Source("10.0.0.1", f"req-{number}"),
                     details={"n": number, "text": "héllo"})
    return actor


async def test_an_intact_chain_verifies(connection):
    await fill(connection)
    report = await verify_chain(connection)
    assert report.ok and report.rows == 5


async def test_updates_and_deletes_are_refused(connection):
    await fill(connection, 2)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await connection.execute("UPDATE sygmax_audit SET action = 'x' WHERE seq = 1")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await connection.execute("DELETE FROM sygmax_audit WHERE seq = 2")


@pytest.mark.parametrize(
    ("edit", "bad_seq", "words"),
    [
        ("UPDATE sygmax_audit SET details = '{\"n\": 99, \"text\": \"héllo\"}' WHERE seq = 3", 3, "altered"),
        ("UPDATE sygmax_audit SET actor_id = gen_random_uuid() WHERE seq = 2", 2, "altered"),
        ("UPDATE sygmax_audit SET at = at + interval '1 second' WHERE seq = 4", 4, "altered"),
        ("DELETE FROM sygmax_audit WHERE seq = 3", 4, "missing"),
    ],
)
async def test_hand_edits_are_detected(connection, edit, bad_seq, words):
    await fill(connection)
    # Someone with owner rights switches the guard off and edits a row by hand.
    await connection.execute("ALTER TABLE sygmax_audit DISABLE TRIGGER sygmax_audit_no_update")
    await connection.execute(edit)
    report = await verify_chain(connection)
    assert not report.ok and report.first_bad_seq == bad_seq and words in report.problem


async def test_concurrent_appends_keep_one_chain(database_url):
    async def writer(count: int) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            for _ in range(count):
                async with connection.transaction():
                    await record(connection, actor_id=None, action="x.y", object_type="x")
        finally:
            await connection.close()

    await asyncio.gather(*(writer(20) for _ in range(4)))
    connection = await asyncpg.connect(database_url)
    try:
        report = await verify_chain(connection)
    finally:
        await connection.close()
    assert report.ok and report.rows == 80
