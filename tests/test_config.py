"""Configuration: TOML file, SYGMAX_* overrides, and precise errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from sygmax.config import ConfigError, Section, load_settings, parse_storage_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sygmax.toml"
    path.write_text(text)
    return path


def problems(path: Path | None, environ: dict[str, str] | None = None, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, **kwargs)
    return caught.value.problems


def test_defaults_without_a_file(tmp_path):
    settings = load_settings(tmp_path / "missing.toml", environ={})
    assert settings.server.port == 8000
    assert settings.storage.location.kind == "file"
    assert settings.storage.location.path == "/var/lib/sygmax/objects"


def test_file_then_environment_override(tmp_path):
    path = write(tmp_path, '[database]\nurl = "postgresql://a@db:5432/x"\n[server]\nport = 9000\n')
    settings = load_settings(path, environ={"SYGMAX_SERVER_PORT": "9100", "SYGMAX_RATE_LIMIT_PER_IP_PER_MINUTE": "7",
                                            "SYGMAX_PLUGINS_DISABLED": "feeds, chats"})
    assert settings.database.url == "postgresql://a@db:5432/x"
    assert settings.server.port == 9100
    assert settings.rate_limit.per_ip_per_minute == 7
    assert settings.plugins.disabled == ["feeds", "chats"]
    assert not settings.plugins.is_enabled("feeds") and settings.plugins.is_enabled("system")


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "[server]\nport = 8123\n")
    assert load_settings(environ={"SYGMAX_CONFIG": str(path)}).server.port == 8123


def test_bad_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "[server\nport = 1\n")
    [(key, message)] = problems(path)
    assert key == "<file>" and "not valid TOML" in message and "line 1" in message


@pytest.mark.parametrize(
    ("text", "environ", "expected_key", "expected_words"),
    [
        ("[server]\nprot = 1\n", {}, "server.prot", "unknown key"),
        ("[servr]\nport = 1\n", {}, "servr", "unknown section"),
        ("server = 3\n", {}, "server", "must be a table"),
        ('[server]\nport = "high"\n', {}, "server.port", "valid integer"),
        ("[server]\nport = 70000\n", {}, "server.port", "less than or equal to 65535"),
        ('[storage]\nurl = "ftp://x/y"\n', {}, "storage.url", "unsupported scheme 'ftp'"),
        ('[storage]\nurl = "s3://host:9000/bucket"\n', {}, "storage.url", "needs credentials"),
        ('[storage]\nurl = "file://relative/path"\n', {}, "storage.url", "absolute path"),
        ('[database]\nurl = "mysql://u@h/db"\n', {}, "database.url", "unsupported scheme 'mysql'"),
        ('[redis]\nurl = "http://h"\n', {}, "redis.url", "unsupported scheme 'http'"),
        ('[log]\nlevel = "loud"\n', {}, "log.level", "'debug', 'info', 'warning' or 'error'"),
        ("", {"SYGMAX_SERVER_WORKERS": "many"}, "server.workers", "valid integer"),
        ("", {"SYGMAX_SERVER_NOPE": "1"}, "SYGMAX_SERVER_NOPE", "unknown key server.nope"),
        ("", {"SYGMAX_NOWHERE_X": "1"}, "SYGMAX_NOWHERE_X", "unknown section"),
    ],
)
def test_each_mistake_names_its_key(tmp_path, text, environ, expected_key, expected_words):
    found = problems(write(tmp_path, text), environ)
    assert any(key == expected_key and expected_words in message for key, message in found), found


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(write(tmp_path, '[server]\nport = "x"\nworkers = 0\n[storage]\nurl = "nope://"\n'))
    assert {key for key, _ in found} == {"server.port", "server.workers", "storage.url"}


def test_secrets_are_not_echoed(tmp_path):
    text = '[database]\nurl = "mysql://user:hunter2@h/db"\n[storage]\nurl = "s3://AK:sekrit@h:1/b?secure=maybe"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert "hunter2" not in caught.value.render() and "sekrit" not in caught.value.render()


def test_plugin_sections_are_validated(tmp_path):
    class FeedsSettings(Section):
        allow_private_addresses: bool = False

    settings = load_settings(write(tmp_path, "[feeds]\nallow_private_addresses = true\n"), environ={},
                             plugin_sections={"feeds": FeedsSettings})
    assert settings.section("feeds").allow_private_addresses is True
    env = {"SYGMAX_FEEDS_ALLOW_PRIVATE_ADDRESSES": "yes please"}
    found = problems(write(tmp_path, ""), env, plugin_sections={"feeds": FeedsSettings})
    assert found[0][0] == "feeds.allow_private_addresses"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///var/lib/sygmax/objects", {"kind": "file", "path": "/var/lib/sygmax/objects"}),
        ("s3://AK:SK@minio:9000/bucket", {"kind": "s3", "endpoint": "minio:9000", "bucket": "bucket",
                                          "access_key": "AK", "secret_key": "SK", "secure": False}),
        ("s3://AK:S%2FK@s3.example.org/b?secure=true&region=eu-west-1",
         {"endpoint": "s3.example.org", "secret_key": "S/K", "secure": True, "region": "eu-west-1"}),
    ],
)
def test_storage_urls(url, expected):
    location = parse_storage_url(url)
    for field, value in expected.items():
        assert getattr(location, field) == value


@pytest.mark.parametrize("url", ["s3://AK:SK@h:1/", "s3://AK:SK@h:1/a/b", "s3://AK:SK@h/b?colour=red", "s3:///b"])
def test_bad_storage_urls(url):
    with pytest.raises(ValueError):
        parse_storage_url(url)
