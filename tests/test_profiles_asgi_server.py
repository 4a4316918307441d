"""Which ASGI server a ``sygmax run`` process uses: per profile under ``server.asgi_server = "auto"``."""

import pytest

from profiles import PROFILES, asgi_server_for, parse_profiles
from sygmax.config import ConfigError, load_settings


def test_auto_is_the_default_and_gives_realtime_uvicorn_and_the_rest_granian(tmp_path):
    configured = load_settings(tmp_path / "absent.toml", environ={}).server.asgi_server
    assert configured == "auto"
    assert asgi_server_for(parse_profiles("realtime"), configured) == "uvicorn"
    for name in ("api", "worker", "scheduler"):
        assert asgi_server_for(parse_profiles(name), configured) == "granian"
    # A process serving profiles that prefer different servers gets the general default.
    assert asgi_server_for(parse_profiles("api,realtime"), configured) == "granian"


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_a_configured_server_applies_to_every_profile(tmp_path, server):
    configured = load_settings(tmp_path / "absent.toml",
                               environ={"SYGMAX_SERVER_ASGI_SERVER": server}).server.asgi_server
    for name in PROFILES:
        assert asgi_server_for([PROFILES[name]], configured) == server


def test_an_unknown_server_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="asgi_server"):
        load_settings(tmp_path / "absent.toml", environ={"SYGMAX_SERVER_ASGI_SERVER": "hypercorn"})
