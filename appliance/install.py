"""``sygmax install``: provision this host as a Sygmax node, converging from whatever is there.

1. Checks first, changing nothing: root, OS, disk, the ports the node needs.
2. The node's choices go to ``<etc>/appliance.json``, its secrets to ``<etc>/secrets.json``.
3. The bundled Ansible roles (run locally by ansible-runner) install and configure
   PostgreSQL, Redis, object storage, Caddy, supervisord and the Sygmax processes, and run
   the migrations.
4. supervisord's programs are brought in line, every process must answer ``/healthz``, the
   api ``/readyz``; then Caddy gets its configuration through the admin API.
5. The first administrator is created once.

Every step is idempotent, so a run that failed half-way is finished by running the same
command again, and a second run on an installed node reports no changes.
"""

from __future__ import annotations

import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import sygmax
from appliance.admin import AdminResult, ensure_admin
from appliance.health import wait_for
from appliance.layout import ApplianceState, Layout, LayoutError, resolve_prefix
from appliance.node import Changes, converge_programs, ensure_supervisor, wait_ready
from appliance.preflight import (
    Finding,
    check_disk,
    check_os,
    check_ports,
    check_prefix_access,
    check_root,
    check_venv_access,
)
from appliance.runner import TaskEvent, extravars, run_playbook
from appliance.secrets import load_or_create_secrets, render_config
from appliance.supervisor import Supervisor
from sygmax import __version__


@dataclass
class InstallOptions:
    prefix: Path | None = None
    domain: str | None = None
    email: str | None = None
    admin_email: str | None = None
    admin_password: str | None = None
    http_port: int | None = None
    https_port: int | None = None
    base_port: int | None = None
    processes: dict[str, int] | None = None
    storage_endpoint: str | None = None
    force_os: bool = False
    manage_packages: bool = True


class PreflightFailed(RuntimeError):
    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("; ".join(f.message for f in findings))


@dataclass
class InstallReport:
    state: ApplianceState
    changes: list[str] = field(default_factory=list)
    admin: AdminResult | None = None
    verified_url: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class Reporter:
    """What the CLI draws; the default draws nothing."""

    def step(self, title: str) -> None: ...

    def task(self, event: TaskEvent) -> None: ...

    def note(self, message: str) -> None: ...


def plan_state(options: InstallOptions) -> tuple[ApplianceState, bool]:
    """The node's state: the existing one (a re-run) updated with any option given; (state, existed)."""
    prefix = resolve_prefix(options.prefix)
    layout = Layout(prefix)
    existed = layout.state_file.exists()
    state = ApplianceState.from_json(layout.state_file.read_text()) if existed else ApplianceState()
    state.prefix = str(prefix)
    for name in (
        "domain",
        "email",
        "admin_email",
        "http_port",
        "https_port",
        "base_port",
        "storage_endpoint",
    ):
        value = getattr(options, name)
        if value is not None:
            setattr(state, name, value)
    if options.processes:
        state.processes = {**state.processes, **options.processes}
    state.version = __version__
    state.validate()
    if state.storage_endpoint:
        from sygmax.config import parse_storage_url

        try:
            if parse_storage_url(state.storage_endpoint).kind != "s3":
                raise ValueError("use s3://ACCESS:SECRET@host:port/bucket")
        except ValueError as exc:
            raise LayoutError(f"--storage-endpoint: {exc}") from exc
    return state, existed


def preflight(state: ApplianceState, force_os: bool = False) -> list[Finding]:
    """Everything that must hold before the host is touched; errors only."""
    findings = [
        check_root(),
        check_os(force_os),
        check_disk(state.layout.data),
        check_venv_access(state.venv),
        check_prefix_access(state.layout.prefix),
    ]
    sup = Supervisor(state)
    own = sup.pid() if sup.alive() else None
    findings += check_ports(state.all_ports(), own_pid=own)
    return [finding for finding in findings if finding.level == "error"]


def verify_https(state: ApplianceState, path: str = "/readyz", timeout: float = 60.0) -> str:
    """GET the node through Caddy over HTTPS, trusting the internal CA; the URL that answered 200."""
    if not state.tls_internal:
        return ""  # a public certificate needs DNS pointing here; status/doctor report on it
    url = f"https://{state.domain}:{state.https_port}{path}" if state.domain == "localhost" else ""
    if not url:
        return ""

    def answered() -> bool:
        if not state.layout.caddy_root_cert.exists():
            return False
        context = ssl.create_default_context(cafile=str(state.layout.caddy_root_cert))
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    if not wait_for(answered, timeout, interval=0.5):
        raise RuntimeError(
            f"{url} did not answer 200 through Caddy within {timeout:.0f}s; see: sygmax logs caddy"
        )
    return url


def install(options: InstallOptions, reporter: Reporter | None = None) -> InstallReport:
    reporter = reporter or Reporter()
    state, existed = plan_state(options)
    problems = preflight(state, options.force_os)
    if problems:
        raise PreflightFailed(problems)

    changes = Changes()
    layout = state.layout
    reporter.step("Recording the node's settings")
    for directory in (layout.etc, layout.data):
        directory.mkdir(parents=True, exist_ok=True)
    if state.save():
        changes.add("settings (appliance.json)" if existed else "new install recorded")
    node_secrets, created = load_or_create_secrets(layout.secrets_file)
    if created:
        changes.add("secrets generated (secrets.json)")
    config_toml = render_config(state, node_secrets)

    reporter.step("Provisioning with Ansible")
    # After a reboot without systemd nothing runs: supervisord first, so the roles find it.
    if layout.supervisor_conf.exists() and ensure_supervisor(state):
        changes.add("started supervisord")
    result = run_playbook(
        state, extravars(state, node_secrets, config_toml, options.manage_packages), on_event=reporter.task
    )
    changes.items += [f"ansible: {task}" for task in result.changed]

    reporter.step("Starting the Sygmax processes")
    static_source = Path(sygmax.__file__).resolve().parent / "web" / "static"
    if static_source.is_dir():
        for source in static_source.rglob("*"):
            target = layout.static_dir / source.relative_to(static_source)
            if source.is_file() and (not target.exists() or target.read_bytes() != source.read_bytes()):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                changes.add(f"static asset {target.name}")
    converge_programs(state, changes, progress=reporter.note)
    wait_ready(state)

    reporter.step("Checking HTTPS through Caddy")
    report = InstallReport(state)
    report.verified_url = verify_https(state)

    if state.admin_email:
        reporter.step(f"Checking the administrator {state.admin_email}")
        report.admin = ensure_admin(
            state, _database_url(config_toml), state.admin_email, options.admin_password
        )
        if report.admin.created:
            changes.add(f"administrator {state.admin_email}")
            state.admin_created = True
            state.save()
    report.changes = changes.items
    return report


def _database_url(config_toml: str) -> str:
    import tomllib

    return tomllib.loads(config_toml)["database"]["url"]
