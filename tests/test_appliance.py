"""The appliance without installing anything: layout, config rendering, Caddy's document,
pre-flight refusals (each before anything changes), CLI argument refusals, and the roles'
syntax and lint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance import caddy
from appliance.install import InstallOptions, PreflightFailed, install, plan_state
from appliance.layout import ApplianceState, LayoutError, is_local_domain
from appliance.preflight import Finding, check_disk, check_os, check_ports, check_root
from appliance.secrets import NodeSecrets, load_or_create_secrets, render_config
from cli.main import app
from profiles import PROFILES
from tests.servers import free_port

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def node(tmp_path: Path, **overrides) -> ApplianceState:
    values = {"prefix": str(tmp_path / "node"), "http_port": 18480, "https_port": 18443, "base_port": 19000}
    return ApplianceState(**{**values, **overrides})


# --- layout and state -------------------------------------------------------------------------


def test_ports_follow_the_profile_blocks(tmp_path):
    state = node(tmp_path, processes={"api": 3, "realtime": 2, "worker": 1, "scheduler": 0})
    assert [port for _, port in state.profile_processes(PROFILES["api"])] == [19000, 19001, 19002]
    assert [name for name, _ in state.profile_processes(PROFILES["realtime"])] == [
        "sygmax-realtime-1",
        "sygmax-realtime-2",
    ]
    assert state.postgres_port == 19080 and state.redis_port == 19081 and state.caddy_admin_port == 19082
    ports = state.all_ports()
    assert ports[18443] == "caddy (https)" and ports[19040] == "sygmax-worker-1" and 19060 not in ports
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"http_port": 0}, "http port 0 is outside"),
        ({"https_port": 18480}, "must differ"),
        ({"base_port": 65500}, "base port 65500 too high"),
        ({"https_port": 19005}, "falls inside the block"),
        ({"processes": {"api": 0}}, "at least one api process"),
        ({"processes": {"api": 21}}, "api=21"),
        ({"processes": {"api": 1, "mailer": 1}}, "unknown profile 'mailer'"),
    ],
)
def test_impossible_layouts_are_refused(tmp_path, overrides, needle):
    with pytest.raises(LayoutError, match=needle):
        node(tmp_path, **overrides).validate()


@pytest.mark.parametrize(
    ("domain", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("sygmax", True),
        ("chat.corp.internal", True),
        ("box.local", True),
        ("chat.example.org", False),
        ("sygmax.dev", False),
    ],
)
def test_internal_ca_for_local_names_acme_for_public_ones(domain, local):
    assert is_local_domain(domain) is local


def test_state_round_trips_and_reruns_keep_choices(tmp_path):
    first, existed = plan_state(
        InstallOptions(
            prefix=tmp_path / "node",
            domain="chat.example.org",
            http_port=18480,
            https_port=18443,
            base_port=19000,
            processes={"api": 3},
        )
    )
    assert not existed
    assert first.save() and not first.save()  # the second write changes nothing
    again, existed = plan_state(InstallOptions(prefix=tmp_path / "node"))
    assert existed and again.domain == "chat.example.org" and again.processes["api"] == 3
    assert again.public_url == "https://chat.example.org:18443"
    assert (first.layout.state_file.stat().st_mode & 0o777) == 0o600


# --- secrets and sygmax.toml -----------------------------------------------------------------


def test_secrets_are_generated_once_and_private(tmp_path):
    path = tmp_path / "etc" / "secrets.json"
    made, created = load_or_create_secrets(path)
    again, created_again = load_or_create_secrets(path)
    assert created and not created_again and made == again
    assert len({made.postgres_password, made.redis_password, made.presign_secret}) == 3
    assert (path.stat().st_mode & 0o777) == 0o600


def test_config_sets_managed_keys_and_keeps_the_operators(tmp_path):
    state = node(tmp_path)
    state.layout.etc.mkdir(parents=True)
    state.layout.config_file.write_text(
        '[rate_limit]\nper_ip_per_minute = 5000\n[server]\nhost = "0.0.0.0"\nworkers = 3\n'
    )
    text = render_config(state, NodeSecrets("pg-secret", "redis-secret", "presign-secret"))
    data = tomllib.loads(text)
    assert data["rate_limit"] == {"per_ip_per_minute": 5000}
    assert data["server"] == {"host": "127.0.0.1", "workers": 3, "public_url": "https://localhost:18443"}
    assert data["database"]["url"] == "postgresql://sygmax:pg-secret@127.0.0.1:19080/sygmax"
    assert data["redis"]["url"] == "redis://:redis-secret@127.0.0.1:19081/0"
    assert data["storage"]["url"] == f"file://{state.layout.data / 'objects'}"
    assert data["auth"]["keys_dir"] == str(state.layout.data / "keys")
    state.layout.config_file.write_text(text)
    assert render_config(state, NodeSecrets("pg-secret", "redis-secret", "presign-secret")) == text

    from sygmax.config import load_settings

    settings = load_settings(state.layout.config_file, environ={})
    assert (
        settings.storage.presign_secret == "presign-secret" and settings.rate_limit.per_ip_per_minute == 5000
    )


# --- Caddy's configuration document ------------------------------------------------------------


def test_caddy_document_for_a_localhost_node(tmp_path):
    state = node(tmp_path, processes={"api": 2, "realtime": 1, "worker": 1, "scheduler": 1})
    document = caddy.desired_config(state)
    assert document["admin"]["listen"] == "127.0.0.1:19082"
    http = document["apps"]["http"]
    assert (http["http_port"], http["https_port"]) == (18480, 18443)
    server = http["servers"]["sygmax"]
    assert server["listen"] == [":18443"]
    site = server["routes"][0]
    assert site["match"] == [{"host": ["localhost"]}]
    routes = site["handle"][0]["routes"]
    websocket, static, api = routes
    assert websocket["match"] == [{"path": ["/ws/*"]}]
    assert [u["dial"] for u in websocket["handle"][0]["upstreams"]] == ["127.0.0.1:19020"]
    assert static["handle"][0]["response"]["set"]["Cache-Control"] == [caddy.STATIC_CACHE]
    assert static["handle"][1] == {"handler": "file_server", "root": str(state.layout.opt)}
    proxy = api["handle"][1]
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:19000", "127.0.0.1:19001"]
    assert proxy["health_checks"]["active"]["uri"] == "/healthz"
    assert proxy["load_balancing"]["try_duration"] == "5s"
    policy = document["apps"]["tls"]["automation"]["policies"][0]
    assert policy == {"subjects": ["localhost"], "issuers": [{"module": "internal"}]}
    assert document["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False


def test_caddy_document_for_a_public_domain_uses_acme(tmp_path):
    state = node(
        tmp_path,
        domain="chat.example.org",
        email="ops@example.org",
        processes={"api": 1, "realtime": 0, "worker": 1, "scheduler": 1},
    )
    document = caddy.desired_config(state)
    policy = document["apps"]["tls"]["automation"]["policies"][0]
    assert policy["issuers"] == [{"module": "acme", "email": "ops@example.org"}]
    site = document["apps"]["http"]["servers"]["sygmax"]["routes"][0]
    assert site["match"] == [{"host": ["chat.example.org"]}]
    routes = site["handle"][0]["routes"]
    assert all(route.get("match") != [{"path": ["/ws/*"]}] for route in routes)  # no realtime: no route


# --- pre-flight: refused before anything changes ----------------------------------------------


def test_os_check_reads_os_release(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    assert check_os(os_release=release).ok
    release.write_text('ID=fedora\nVERSION_ID="40"\nPRETTY_NAME="Fedora Linux 40"\n')
    refused = check_os(os_release=release)
    assert refused.level == "error" and "unsupported OS Fedora Linux 40" in refused.message
    assert check_os(force=True, os_release=release).level == "warning"


def test_port_check_names_the_process_holding_the_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        [finding] = check_ports({port: "caddy (https)"})
    assert finding.level == "error"
    assert f"port {port} (for caddy (https)) is taken by python" in finding.message
    assert "ss -ltnp" in finding.fix


def test_disk_check_needs_room(tmp_path):
    assert check_disk(tmp_path / "not" / "yet", needed=1).ok
    refused = check_disk(tmp_path, needed=1 << 60)
    assert refused.level == "error" and "Sygmax needs at least" in refused.message


@pytest.mark.parametrize("problem", ["root", "os", "disk", "port"])
def test_install_refuses_before_changing_anything(tmp_path, monkeypatch, problem):
    import appliance.install as installer

    prefix = tmp_path / "node"
    if problem == "root":
        monkeypatch.setattr(installer, "check_root", lambda: check_root(euid=1000))
    elif problem == "os":
        monkeypatch.setattr(
            installer,
            "check_os",
            lambda force: Finding(
                "os", "error", "unsupported OS Fedora Linux 40: Sygmax supports Debian 12", "use Debian"
            ),
        )
    elif problem == "disk":
        monkeypatch.setattr(installer, "check_disk", lambda path: check_disk(path, needed=1 << 60))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    https = holder.getsockname()[1] if problem == "port" else free_port()
    try:
        result = runner.invoke(
            app,
            [
                "install",
                "--prefix",
                str(prefix),
                "--http-port",
                str(free_port()),
                "--https-port",
                str(https),
                "--base-port",
                "19000",
            ],
        )
    finally:
        holder.close()
    assert result.exit_code == 1, result.output
    expected = {
        "root": "must run as root",
        "os": "unsupported OS",
        "disk": "Sygmax needs at least",
        "port": f"port {https} (for caddy (https)) is taken by python",
    }[problem]
    assert expected in result.output and "nothing was changed" in result.output
    assert not prefix.exists()


def test_install_refuses_a_bad_layout(tmp_path):
    prefix = tmp_path / "node"
    result = runner.invoke(
        app, ["install", "--prefix", str(prefix), "--http-port", "8443", "--https-port", "8443"]
    )
    assert result.exit_code == 1 and "must differ" in result.output and not prefix.exists()
    result = runner.invoke(app, ["install", "--prefix", str(prefix), "--processes", "api=lots"])
    assert result.exit_code == 1 and "expected PROFILE=N" in result.output and not prefix.exists()
    result = runner.invoke(
        app,
        [
            "install",
            "--prefix",
            str(prefix),
            "--storage-endpoint",
            "file:///srv/x",
            "--http-port",
            "18480",
            "--https-port",
            "18443",
            "--base-port",
            "19000",
        ],
    )
    assert result.exit_code == 1 and "--storage-endpoint" in result.output and not prefix.exists()


def test_install_api_refuses_programmatically(tmp_path, monkeypatch):
    import appliance.install as installer

    monkeypatch.setattr(installer, "check_root", lambda: check_root(euid=1000))
    with pytest.raises(PreflightFailed) as caught:
        install(InstallOptions(prefix=tmp_path / "node", http_port=18480, https_port=18443, base_port=19000))
    assert caught.value.findings[0].check == "root" and not (tmp_path / "node").exists()


# --- node commands without an install ---------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["status"], ["logs"], ["scale", "api=2"], ["up"], ["down"], ["restart"], ["uninstall", "--yes"]]
)
def test_node_commands_need_an_install(tmp_path, args):
    result = runner.invoke(app, [*args, "--prefix", str(tmp_path / "nothing")])
    assert result.exit_code == 1, result.output
    assert "no Sygmax install found" in result.output and "sygmax install --prefix" in result.output


@pytest.mark.parametrize(
    ("counts", "needle"),
    [
        (["api"], "expected PROFILE=N"),
        (["api=-1"], "expected PROFILE=N"),
        (["mail=2"], "unknown profile 'mail'"),
        (["api=2", "api=3"], "api given twice"),
    ],
)
def test_scale_refuses_bad_counts(tmp_path, counts, needle):
    result = runner.invoke(app, ["scale", *counts, "--prefix", str(tmp_path)])
    assert result.exit_code == 1 and needle in result.output


def test_doctor_before_install_checks_the_host(tmp_path):
    result = runner.invoke(app, ["doctor", "--prefix", str(tmp_path / "nothing")])
    assert result.exit_code in (0, 1), result.output
    for check in ("os", "disk", "memory", "postgresql version", "caddy version", "clock sync", "install"):
        assert check in result.output
    assert "sudo sygmax install" in result.output


# --- the Ansible roles -----------------------------------------------------------------------


def test_playbook_and_roles_pass_syntax_check():
    from appliance.runner import PLAYBOOK, ROLES_DIR

    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(PLAYBOOK)],
        capture_output=True,
        text=True,
        env={
            "PATH": f"{BIN}:/usr/bin:/bin",
            "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
            "ANSIBLE_LOCALHOST_WARNING": "False",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_roles_pass_ansible_lint(tmp_path):
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.fail("ansible-lint is missing: pip install -e '.[dev]'")
    work = tmp_path / "lint"
    # A copy without the package marker (roles/__init__.py makes them ship inside the wheel).
    shutil.copytree(
        ROOT / "roles", work / "roles", ignore=shutil.ignore_patterns("__pycache__", "__init__.py")
    )
    shutil.copytree(ROOT / "appliance" / "playbooks", work / "playbooks")
    done = subprocess.run(
        [str(lint), "--offline", "--nocolor", "--profile", "production", "roles", "playbooks/node.yml"],
        cwd=work,
        capture_output=True,
        text=True,
        env={
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANSIBLE_ROLES_PATH": str(work / "roles"),
        },
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]


# --- Kubernetes manifests ---------------------------------------------------------------------


def test_kubernetes_manifests_cover_every_profile():
    import yaml

    directory = ROOT / "profiles" / "kubernetes"
    config = list(yaml.safe_load_all((directory / "config.yaml").read_text()))
    provided = {(doc["kind"], doc["metadata"]["name"]) for doc in config}
    assert {("ConfigMap", "sygmax-config"), ("Secret", "sygmax-secrets")} <= provided
    from sygmax.config import KERNEL_SECTIONS

    for doc in config:  # every variable names a real setting
        for key in {**doc.get("data", {}), **doc.get("stringData", {})}:
            section = next(s for s in KERNEL_SECTIONS if key.lower().startswith(f"sygmax_{s}_"))
            assert key.lower().removeprefix(f"sygmax_{section}_") in KERNEL_SECTIONS[section].model_fields, (
                key
            )
    for name in PROFILES:
        docs = {doc["kind"]: doc for doc in yaml.safe_load_all((directory / f"{name}.yaml").read_text())}
        deployment, service = docs["Deployment"], docs["Service"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][:2] == ["run", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        refs = {
            (
                ("ConfigMap" if "configMapRef" in ref else "Secret"),
                (ref.get("configMapRef") or ref.get("secretRef"))["name"],
            )
            for ref in container["envFrom"]
        }
        assert refs <= provided
        assert deployment["spec"]["replicas"] == PROFILES[name].default_processes
