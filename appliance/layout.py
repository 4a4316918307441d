"""Where an appliance install lives: paths under a prefix, ports, process counts.

Everything the appliance writes is under one prefix (``/`` on a real host): config and
secrets in ``<prefix>/etc/sygmax``, data in ``<prefix>/var/lib/sygmax``, logs in
``<prefix>/var/log/sygmax``, sockets and pid files in ``<prefix>/run/sygmax``, static assets
in ``<prefix>/opt/sygmax``. Tests and side-by-side installs use their own prefix and ports.

The install's choices (domain, ports, process counts) are kept in
``<prefix>/etc/sygmax/appliance.json`` so that ``sygmax status``, ``scale``, ``doctor`` and a
second ``sygmax install`` see the same node.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from profiles import PROFILES, SERVICE_PORT_OFFSETS, Profile

STATE_FILE = "appliance.json"
DEFAULT_PREFIX = Path("/")
DEFAULT_BASE_PORT = 8000


class LayoutError(ValueError):
    """The requested layout is impossible (bad port, unknown profile, no install found)."""


@dataclass(frozen=True)
class Layout:
    prefix: Path

    @property
    def etc(self) -> Path:
        return self.prefix / "etc" / "sygmax"

    @property
    def data(self) -> Path:
        return self.prefix / "var" / "lib" / "sygmax"

    @property
    def log(self) -> Path:
        return self.prefix / "var" / "log" / "sygmax"

    @property
    def run(self) -> Path:
        return self.prefix / "run" / "sygmax"

    @property
    def opt(self) -> Path:
        return self.prefix / "opt" / "sygmax"

    @property
    def config_file(self) -> Path:
        return self.etc / "sygmax.toml"

    @property
    def secrets_file(self) -> Path:
        return self.etc / "secrets.json"

    @property
    def state_file(self) -> Path:
        return self.etc / STATE_FILE

    @property
    def supervisor_conf(self) -> Path:
        return self.etc / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def static_dir(self) -> Path:
        return self.opt / "static"

    @property
    def releases(self) -> Path:
        """``deployments/<version>``: one venv per release installed by ``sygmax upgrade``, and
        ``deployments/current``, a link to the venv that serves."""
        return self.opt / "deployments"

    @property
    def caddy_data(self) -> Path:
        """Caddy's data dir (certificates, the internal CA) is ``$XDG_DATA_HOME/caddy``."""
        return self.data / "caddy"

    @property
    def caddy_root_cert(self) -> Path:
        return self.caddy_data / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    @property
    def instance(self) -> str:
        """Name of this install for systemd units and process titles: ``sygmax`` for the host's own."""
        if self.prefix == DEFAULT_PREFIX:
            return "sygmax"
        return "sygmax-" + hashlib.sha256(str(self.prefix).encode()).hexdigest()[:8]


def is_local_domain(domain: str) -> bool:
    """localhost, an IP address or a name no public CA will certify: Caddy's internal CA signs it."""
    try:
        ipaddress.ip_address(domain)
        return True
    except ValueError:
        pass
    lowered = domain.lower().rstrip(".")
    return (
        "." not in lowered
        or lowered == "localhost"
        or lowered.endswith((".localhost", ".local", ".internal", ".test", ".invalid", ".lan", ".home.arpa"))
    )


@dataclass
class ApplianceState:
    """What ``sygmax install`` chose; read back by every other appliance command."""

    prefix: str = "/"
    domain: str = "localhost"
    email: str = ""
    admin_email: str = ""
    http_port: int = 80
    https_port: int = 443
    base_port: int = DEFAULT_BASE_PORT
    processes: dict[str, int] = field(
        default_factory=lambda: {name: p.default_processes for name, p in PROFILES.items()}
    )
    storage_endpoint: str = ""  # s3://ACCESS:SECRET@host:port/bucket, or "" for local disk
    venv: str = field(default_factory=lambda: sys.prefix)
    service_user: str = "sygmax"
    admin_created: bool = False
    version: str = ""
    # The release that served before the last upgrade or rollback: what `sygmax upgrade --rollback` returns to.
    previous_venv: str = ""
    previous_version: str = ""

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.prefix))

    @property
    def tls_internal(self) -> bool:
        return is_local_domain(self.domain)

    @property
    def public_url(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        host = f"[{self.domain}]" if ":" in self.domain else self.domain
        return f"https://{host}{port}"

    def service_port(self, service: str) -> int:
        return self.base_port + SERVICE_PORT_OFFSETS[service]

    @property
    def postgres_port(self) -> int:
        return self.service_port("postgresql")

    @property
    def redis_port(self) -> int:
        return self.service_port("redis")

    @property
    def caddy_admin_port(self) -> int:
        return self.service_port("caddy_admin")

    @property
    def caddy_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.caddy_admin_port}"

    @property
    def sygmax_bin(self) -> str:
        return str(Path(self.venv) / "bin" / "sygmax")

    def profile_processes(self, profile: Profile) -> list[tuple[str, int]]:
        """``[(program name, port), ...]`` for the configured number of processes of ``profile``."""
        count = self.processes.get(profile.name, 0)
        return [(profile.program(n), profile.port(self.base_port, n)) for n in range(1, count + 1)]

    def all_processes(self) -> list[tuple[Profile, str, int]]:
        return [
            (profile, program, port)
            for profile in PROFILES.values()
            for program, port in self.profile_processes(profile)
        ]

    def all_ports(self) -> dict[int, str]:
        """Every TCP port this node listens on, with what listens there."""
        ports = {
            self.http_port: "caddy (http)",
            self.https_port: "caddy (https)",
            self.postgres_port: "postgresql",
            self.redis_port: "redis",
            self.caddy_admin_port: "caddy admin API",
        }
        for _, program, port in self.all_processes():
            ports[port] = program
        return ports

    def validate(self) -> None:
        for name, value in (
            ("http port", self.http_port),
            ("https port", self.https_port),
            ("base port", self.base_port),
        ):
            if not 1 <= value <= 65535:
                raise LayoutError(f"{name} {value} is outside 1..65535")
        if self.base_port + max(SERVICE_PORT_OFFSETS.values()) > 65535:
            raise LayoutError(
                f"base port {self.base_port} too high: the node needs "
                f"{max(SERVICE_PORT_OFFSETS.values()) + 1} ports from it"
            )
        if self.http_port == self.https_port:
            raise LayoutError("--http-port and --https-port must differ")
        low, high = self.base_port, self.base_port + max(SERVICE_PORT_OFFSETS.values())
        for name, value in (("http port", self.http_port), ("https port", self.https_port)):
            if low <= value <= high:
                raise LayoutError(
                    f"{name} {value} falls inside the block {low}-{high} used from "
                    f"--base-port {self.base_port}; choose another base port"
                )
        for name, count in self.processes.items():
            if name not in PROFILES:
                raise LayoutError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
            if not 0 <= count <= PROFILES[name].max_processes:
                raise LayoutError(
                    f"{name}={count}: a node runs 0..{PROFILES[name].max_processes} {name} processes"
                )
        if not self.processes.get("api"):
            raise LayoutError("at least one api process is needed to serve the platform")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ApplianceState:
        data = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self) -> bool:
        """Write the state file (0600); True if its content changed."""
        path = self.layout.state_file
        text = self.to_json()
        if path.exists() and path.read_text() == text:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return True


def resolve_prefix(prefix: Path | None) -> Path:
    """The prefix to operate on: ``--prefix``, else the one ``SYGMAX_CONFIG`` lives in, else ``/``."""
    if prefix is not None:
        return Path(prefix).resolve()
    config = os.environ.get("SYGMAX_CONFIG")
    if config:
        path = Path(config).resolve()
        # <prefix>/etc/sygmax/sygmax.toml -> <prefix>
        if path.parent.name == "sygmax" and path.parent.parent.name == "etc":
            return path.parent.parent.parent
    return DEFAULT_PREFIX


def load_state(prefix: Path | None) -> ApplianceState:
    """The install at ``prefix``, or :class:`LayoutError` saying how to make one."""
    layout = Layout(resolve_prefix(prefix))
    path = layout.state_file
    if not path.exists():
        hint = "" if layout.prefix == DEFAULT_PREFIX else f" --prefix {layout.prefix}"
        raise LayoutError(
            f"no Sygmax install found at {layout.prefix} ({path} is missing); run: sudo sygmax install{hint}"
        )
    try:
        return ApplianceState.from_json(path.read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from exc
