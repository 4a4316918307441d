"""``sygmax backup`` and ``sygmax restore`` against real PostgreSQL and storage: the round trip,
every refusal (nothing changed afterwards), the archive format's guarantees, S3 locations."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.backup import create_backup
from appliance.backup.crypto import SEGMENT, TAG, read_header
from appliance.backup.errors import ArchiveRefused, BackupError
from appliance.backup.restore import merge_config
from appliance.backup.verify import verify_archive
from cli.main import app
from tests.backup_helpers import KEY, db_snapshot, execute, fetch, node_settings, object_snapshot, populate
from tests.servers import S3Server

runner = CliRunner()


@pytest.fixture
def node(environ, tmp_path):
    """A node's config file (with an operator key outside the managed ones), JWT keys, backup location."""
    config = tmp_path / "etc" / "sygmax.toml"
    config.parent.mkdir()
    config.write_text('[log]\nlevel = "warning"\n\n[backup]\nlocation = "%s"\n' % (tmp_path / "archives"))
    keys = Path(environ["SYGMAX_AUTH_KEYS_DIR"])
    keys.mkdir(parents=True)
    (keys / "signing-1.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n")
    env = {**environ, "SYGMAX_CONFIG": str(config), "SYGMAX_BACKUP_KEY": KEY}
    return env


def invoke(args: list[str], env: dict[str, str], stdin: str | None = None):
    return runner.invoke(app, args, env=env, input=stdin)


def settings_of(env: dict[str, str]):
    return node_settings(Path(env["SYGMAX_CONFIG"]), env)


def backup(env: dict[str, str], *extra: str) -> str:
    result = invoke(["backup", "create", *extra], env)
    assert result.exit_code == 0, result.output
    [archive] = [line.split(": ", 1)[1].strip() for line in result.output.splitlines()
                 if line.startswith("backup written")]
    return archive


def wipe(settings) -> None:
    execute(settings.database.url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    shutil.rmtree(settings.storage.location.path)
    shutil.rmtree(settings.auth.keys_dir)


def test_round_trip_restores_identical_database_objects_and_config(node, make_app):
    settings = settings_of(node)
    populate(settings, make_app)
    before_db, before_objects = db_snapshot(settings.database.url), object_snapshot(settings)
    assert before_db["sygmax_user"][0] == 3 and before_db["sygmax_workspace"][0] == 3
    assert len(before_objects) == 4
    config_before = Path(node["SYGMAX_CONFIG"]).read_text()
    archive = backup(node)
    assert archive.endswith(".sygbak") and Path(archive).stat().st_mode & 0o077 == 0

    wipe(settings)
    Path(node["SYGMAX_CONFIG"]).write_text(config_before.replace('"warning"', '"debug"'))
    assert db_snapshot(settings.database.url) == {} and not Path(settings.storage.location.path).exists()

    result = invoke(["restore", archive, "--yes"], node)
    assert result.exit_code == 0, result.output
    assert "restore complete" in result.output and "4 restored" in result.output
    assert db_snapshot(settings.database.url) == before_db
    assert object_snapshot(settings) == before_objects
    assert tomllib.loads(Path(node["SYGMAX_CONFIG"]).read_text())["log"]["level"] == "warning"
    assert (Path(settings.auth.keys_dir) / "signing-1.pem").read_text().endswith("not-a-real-key\n")


def test_restore_removes_what_came_after_the_archive(node, make_app):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    before_db, before_objects = db_snapshot(settings.database.url), object_snapshot(settings)
    archive = backup(node)
    populate(settings, make_app, users=2, extra_object="later/object.txt")  # not in the archive
    fetch(settings.database.url, "CREATE TABLE later_table (id int)")
    result = invoke(["restore", archive, "--yes"], node)
    assert result.exit_code == 0, result.output
    assert db_snapshot(settings.database.url) == before_db
    assert object_snapshot(settings) == before_objects


def test_verify_and_list(node, make_app):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    archive = backup(node, "--reason", "before-maintenance")
    result = invoke(["backup", "verify", archive], node)
    assert result.exit_code == 0, result.output
    assert "archive OK" in result.output and "4 object(s)" in result.output
    listed = invoke(["backup", "list"], node)
    assert listed.exit_code == 0 and Path(archive).name[:20] in listed.output
    assert "before-maintenance" in listed.output


def snapshot_all(settings) -> tuple:
    return (db_snapshot(settings.database.url), object_snapshot(settings),
            Path(settings.source).read_text(), sorted(p.name for p in Path(settings.auth.keys_dir).iterdir()))


def refused(node, archive: str, expected: str, env: dict[str, str] | None = None) -> None:
    """Both verify and restore refuse with ``expected`` in the message; nothing on the node changed."""
    settings = settings_of(node)
    before = snapshot_all(settings)
    checked = invoke(["backup", "verify", archive], env or node)
    assert checked.exit_code == 1, checked.output
    assert expected in checked.output, checked.output
    result = invoke(["restore", archive, "--yes"], env or node)
    assert result.exit_code == 1, result.output
    assert "refused, nothing was changed" in result.output and expected in result.output, result.output
    assert snapshot_all(settings) == before


@pytest.fixture
def archived(node, make_app):
    """A populated node with one archive; then the node changes, so a restore would be visible."""
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    archive = backup(node)
    populate(settings, make_app, users=2)
    return archive


def test_a_flipped_byte_is_refused(node, archived):
    data = bytearray(Path(archived).read_bytes())
    position = len(data) // 2
    data[position] ^= 0x01
    damaged = Path(archived).with_name("damaged.sygbak")
    damaged.write_bytes(bytes(data))
    refused(node, str(damaged), "is corrupt: segment")


def test_a_flipped_header_byte_is_refused(node, archived):
    data = bytearray(Path(archived).read_bytes())
    data[40] ^= 0x20
    damaged = Path(archived).with_name("header.sygbak")
    damaged.write_bytes(bytes(data))
    refused(node, str(damaged), "header checksum does not match")


@pytest.mark.parametrize("cut", ["segment-boundary", "inside-segment", "header"])
def test_a_truncated_archive_is_refused(node, archived, cut):
    data = Path(archived).read_bytes()
    with open(archived, "rb") as handle:
        header = read_header(handle).size
    whole_segments = (len(data) - header) // (SEGMENT + TAG)
    assert whole_segments >= 3
    keep = {"segment-boundary": header + (whole_segments - 1) * (SEGMENT + TAG),  # drops the last ones whole
            "inside-segment": len(data) - 1000, "header": 30}[cut]
    truncated = Path(archived).with_name(f"truncated-{cut}.sygbak")
    truncated.write_bytes(data[:keep])
    refused(node, str(truncated), "truncated")


def test_a_wrong_key_is_refused(node, archived):
    refused(node, archived, "wrong backup key", env={**node, "SYGMAX_BACKUP_KEY": "another key of enough length"})


def test_an_archive_from_a_newer_version_is_refused(node, make_app, monkeypatch):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    monkeypatch.setattr("appliance.backup.create.__version__", "99.0.0")
    archive = backup(node)
    monkeypatch.undo()
    populate(settings, make_app, users=1)
    refused(node, archive, "written by Sygmax 99.0.0, newer than this Sygmax")


def test_an_archive_with_unknown_migrations_is_refused(node, make_app):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    fetch(settings.database.url, "INSERT INTO sygmax_migrations (module, name, checksum) "
                                 "VALUES ('kernel', '9999_from_the_future.sql', 'x')")
    archive = backup(node)
    fetch(settings.database.url, "DELETE FROM sygmax_migrations WHERE name = '9999_from_the_future.sql'")
    populate(settings, make_app, users=1)
    refused(node, archive, "kernel/9999_from_the_future.sql")


def test_a_file_that_is_no_archive_is_refused(node, tmp_path):
    other = tmp_path / "notes.sygbak"
    other.write_text("just some text, long enough to hold a header")
    refused(node, str(other), "not a Sygmax backup archive")


def test_point_in_time_refusals(node, archived):
    """This archive has no base backup (the test server does not archive WAL)."""
    result = invoke(["restore", "--at", "2020-01-01T00:00:00Z", "--yes"], node)
    assert result.exit_code == 1, result.output
    assert "no archive with a base backup made before 2020-01-01" in result.output
    refused_at = invoke(["restore", archived, "--at", "2020-01-01T00:00:00", "--yes"], node)
    assert refused_at.exit_code == 1 and "holds no base backup" in refused_at.output, refused_at.output
    assert "refused, nothing was changed" in refused_at.output


def test_declining_the_prompt_changes_nothing(node, archived):
    settings = settings_of(node)
    before = snapshot_all(settings)
    result = invoke(["restore", archived], node, stdin="n\n")
    assert result.exit_code == 1 and "restore cancelled; nothing was changed" in result.output
    assert snapshot_all(settings) == before


def test_cli_refusals_without_an_archive(node, tmp_path):
    missing_key = {key: value for key, value in node.items() if key != "SYGMAX_BACKUP_KEY"}
    for args, env, message in [
        (["restore"], node, "give an ARCHIVE, --at TIMESTAMP, or both"),
        (["restore", "x.sygbak", "--at", "yesterday"], node, "is not an ISO 8601 time"),
        (["restore", "x.sygbak", "--at", "2999-01-01T00:00:00Z"], node, "is in the future"),
        (["restore", str(tmp_path / "absent.sygbak"), "--yes"], node, "cannot open"),
        (["backup", "create"], missing_key, "no backup key"),
        (["backup", "create"], {**node, "SYGMAX_BACKUP_KEY": "short"}, "at least 16 characters"),
        (["backup", "create", "--key-file", str(tmp_path / "nope")], node, "cannot read the key file"),
        (["backup", "create"], {**node, "SYGMAX_DATABASE_URL": "postgresql://x:y@127.0.0.1:1/none"},
         "cannot reach the database"),
    ]:
        result = invoke(args, env)
        assert result.exit_code != 0, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not (tmp_path / "archives").exists() or not list((tmp_path / "archives").iterdir())


def test_failed_backup_leaves_no_partial_archive(node, make_app, tmp_path):
    """pg_dump fails half-way (a role that may not read every table): no archive, not even a partial one."""
    import uuid
    from urllib.parse import urlsplit

    settings = settings_of(node)
    populate(settings, make_app, users=1)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    execute(settings.database.url, f"CREATE ROLE {role} LOGIN PASSWORD 'reader-password'; "
                                   f"GRANT SELECT ON sygmax_migrations TO {role}")
    try:
        parts = urlsplit(settings.database.url)
        url = parts._replace(netloc=f"{role}:reader-password@{parts.hostname}:{parts.port}").geturl()
        result = invoke(["backup", "create"], {**node, "SYGMAX_DATABASE_URL": url})
        assert result.exit_code == 1, result.output
        assert "pg_dump failed" in result.output and "permission denied" in result.output, result.output
        assert list((tmp_path / "archives").iterdir()) == []  # the .partial file is gone too
    finally:
        execute(settings.database.url, f"REVOKE ALL ON sygmax_migrations FROM {role}; DROP ROLE {role}")


def test_key_file_and_the_manifest(node, make_app, tmp_path):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    key_file = tmp_path / "backup.key"
    key_file.write_text("a key kept in a file, not in the config\n")
    archive = backup(node, "--key-file", str(key_file), "--output", str(tmp_path / "explicit.sygbak"))
    assert archive == str(tmp_path / "explicit.sygbak")
    with pytest.raises(ArchiveRefused, match="wrong backup key"):
        verify_archive(archive, KEY)
    contents = verify_archive(archive, "a key kept in a file, not in the config")
    meta = contents.metadata
    assert meta["sygmax_version"] and meta["postgresql_version"].startswith("1")
    assert "kernel" in meta["migrations"] or meta["migrations"]
    assert set(contents.parts) >= {"database", "config/sygmax.toml", "config/keys/signing-1.pem",
                                   "objects/files/big.bin", "objects/docs/ünïcode name.md"}
    assert contents.parts["objects/avatars/1.png"]["content_type"] == "image/png"
    assert contents.parts["objects/docs/empty.txt"]["size"] == 0
    # Nothing of the data is readable in the file: the whole tar stream is encrypted.
    raw = Path(archive).read_bytes()
    assert b"sygmax_user" not in raw and b"# hello" not in raw and b"not-a-real-key" not in raw


def test_merge_config_keeps_this_hosts_own_keys():
    current = ('# header\n[database]\nurl = "postgresql://sygmax:new@127.0.0.1:8100/sygmax"\n'
               '[storage]\nurl = "file:///new/objects"\npresign_secret = "new"\n')
    archived = ('[database]\nurl = "postgresql://sygmax:old@127.0.0.1:5432/sygmax"\npool_max = 50\n'
                '[storage]\nurl = "file:///old"\npresign_secret = "old"\n[backup]\nkeep_daily = 14\n'
                '[redis]\nurl = "redis://:old@127.0.0.1:6379/0"\n')
    merged = merge_config(current, archived)
    data = tomllib.loads(merged)
    assert merged.startswith("# header\n")
    assert data["database"] == {"url": "postgresql://sygmax:new@127.0.0.1:8100/sygmax", "pool_max": 50}
    assert data["storage"] == {"url": "file:///new/objects", "presign_secret": "new"}
    assert data["backup"] == {"keep_daily": 14}
    assert "url" not in data["redis"]  # the old host's Redis password does not come along


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    yield server
    server.stop()


def test_s3_location_round_trip(node, make_app, s3):
    settings = settings_of(node)
    populate(settings, make_app, users=1)
    before_db, before_objects = db_snapshot(settings.database.url), object_snapshot(settings)
    location = s3.url("backups") + "/node-a"
    result = create_backup(settings, output=location, key=KEY)
    assert result.location.startswith("s3://") and result.location.endswith(".sygbak")
    archive = f"{location}/{result.name}"
    named = create_backup(settings, output=f"{location}/named.sygbak", key=KEY)
    assert named.name == "named.sygbak" and named.location.endswith("/backups/node-a/named.sygbak")
    verify_archive(f"{location}/named.sygbak", KEY)
    listed = invoke(["backup", "list", "--location", location], node)
    assert listed.exit_code == 0 and result.name[:20] in listed.output, listed.output
    populate(settings, make_app, users=1)
    restored = invoke(["restore", archive, "--yes"], node)
    assert restored.exit_code == 0, restored.output
    assert db_snapshot(settings.database.url) == before_db
    assert object_snapshot(settings) == before_objects


def test_s3_failed_backup_leaves_no_object(node, make_app, s3):
    """pg_dump fails half-way into an S3 upload: the multipart upload is aborted, nothing is listed."""
    import uuid
    from urllib.parse import urlsplit

    settings = settings_of(node)
    populate(settings, make_app, users=1)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    execute(settings.database.url, f"CREATE ROLE {role} LOGIN PASSWORD 'reader-password'; "
                                   f"GRANT SELECT ON sygmax_migrations TO {role}")
    location = s3.url("backups") + "/failing"
    try:
        parts = urlsplit(settings.database.url)
        url = parts._replace(netloc=f"{role}:reader-password@{parts.hostname}:{parts.port}").geturl()
        result = invoke(["backup", "create", "-o", location], {**node, "SYGMAX_DATABASE_URL": url})
        assert result.exit_code == 1 and "pg_dump failed" in result.output, result.output
    finally:
        execute(settings.database.url, f"REVOKE ALL ON sygmax_migrations FROM {role}; DROP ROLE {role}")
    from minio import Minio

    client = Minio(f"127.0.0.1:{s3.port}", access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    assert [item.object_name for item in client.list_objects("backups", "failing/", recursive=True)] == []


def test_s3_unreachable_is_a_clear_error(node):
    with pytest.raises(BackupError, match="S3 bucket check failed"):
        create_backup(settings_of(node), output="s3://a:b@127.0.0.1:1/bucket", key=KEY)


def test_manifest_json_is_last_and_lists_every_part(node, make_app, tmp_path):
    """Decrypting by hand gives a tar any tool reads (docs/operator-guide.md)."""
    import tarfile

    from appliance.backup.verify import open_archive

    settings = settings_of(node)
    populate(settings, make_app, users=1)
    archive = backup(node)
    with open_archive(archive, KEY) as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
        names, parts = [], set()
        for member in tar:
            names.append(member.name)
            if "SYGMAX.part" in member.pax_headers:
                parts.add(member.pax_headers["SYGMAX.part"])
            if member.name == "manifest.json":
                manifest = json.loads(tar.extractfile(member).read())
    assert names[0] == "backup.json" and names[-1] == "manifest.json"
    # 9.6 MB in members of at most 4 MiB
    assert [name for name in names if name.startswith("objects/files/big.bin/")] == [
        "objects/files/big.bin/000000", "objects/files/big.bin/000001", "objects/files/big.bin/000002"]
    assert set(manifest["parts"]) == parts


def test_bad_backup_settings_are_named(node):
    config = Path(node["SYGMAX_CONFIG"])
    config.write_text('[backup]\nkeep_daily = 0\nschedule_hour = 24\nkey = "short"\nunknown = 1\n')
    result = invoke(["backup", "list"], {k: v for k, v in node.items() if k != "SYGMAX_BACKUP_KEY"})
    assert result.exit_code == 2, result.output
    for key in ("backup.keep_daily", "backup.schedule_hour", "backup.key", "backup.unknown"):
        assert key in result.output, result.output
    assert "'short'" not in result.output  # the key's value is never echoed


def test_decrypt_writes_the_tar_stream_and_refuses_a_damaged_archive(node, archived, tmp_path):
    import tarfile

    out = tmp_path / "plain.tar"
    result = invoke(["backup", "decrypt", archived, "-o", str(out)], node)
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[0] == "backup.json" and names[-1] == "manifest.json" and "database/000000.dump" in names
    again = invoke(["backup", "decrypt", archived, "-o", str(out)], node)
    assert again.exit_code == 1 and "exists" in again.output
    data = Path(archived).read_bytes()
    cut = tmp_path / "cut.sygbak"
    cut.write_bytes(data[: len(data) - 100])
    refused_out = tmp_path / "cut.tar"
    result = invoke(["backup", "decrypt", str(cut), "-o", str(refused_out)], node)
    assert result.exit_code == 1 and "truncated" in result.output, result.output
    assert not refused_out.exists()
