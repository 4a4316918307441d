"""ansible-runner driver: run the bundled roles against this host over a local connection.

The playbook (``appliance/playbooks/node.yml``) and the roles (``roles/``) ship inside the
package. Variables are passed as extra vars; the ones holding secrets are removed from the
runner's private directory as soon as the run ends, and the tasks that use them are
``no_log``. Each task start and result is reported to a callback (the CLI draws it with rich).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import roles as roles_package
from appliance.layout import ApplianceState
from appliance.preflight import pid1_is_systemd
from appliance.secrets import NodeSecrets
from profiles import PROFILES

PLAYBOOK = Path(__file__).parent / "playbooks" / "node.yml"
ROLES_DIR = Path(roles_package.__file__).parent


class ProvisionError(RuntimeError):
    """A task failed; the message names it. Re-running ``sygmax install`` resumes."""


@dataclass
class PlaybookResult:
    changed: list[str] = field(default_factory=list)  # names of tasks that changed something
    tasks: int = 0

    @property
    def changed_count(self) -> int:
        return len(self.changed)


@dataclass(frozen=True)
class TaskEvent:
    kind: str  # "start" | "ok" | "changed" | "skipped" | "failed"
    task: str
    role: str = ""


def extravars(
    state: ApplianceState,
    node_secrets: NodeSecrets,
    config_toml: str,
    manage_packages: bool = True,
    migrate: bool = True,
) -> dict:
    layout = state.layout
    processes = [
        {"name": program, "profile": profile.name, "port": port}
        for profile, program, port in state.all_processes()
    ]
    return {
        "sygmax_prefix": str(layout.prefix),
        "sygmax_etc": str(layout.etc),
        "sygmax_data": str(layout.data),
        "sygmax_log": str(layout.log),
        "sygmax_run": str(layout.run),
        "sygmax_opt": str(layout.opt),
        "sygmax_instance": layout.instance,
        "sygmax_user": state.service_user,
        "sygmax_venv": state.venv,
        "sygmax_systemd": pid1_is_systemd(),
        "sygmax_manage_packages": manage_packages,
        "sygmax_storage_endpoint": state.storage_endpoint,
        "sygmax_config_toml": config_toml,
        "postgresql_port": state.postgres_port,
        "postgresql_password": node_secrets.postgres_password,
        "redis_port": state.redis_port,
        "redis_password": node_secrets.redis_password,
        "caddy_admin_port": state.caddy_admin_port,
        "caddy_http_port": state.http_port,
        "caddy_https_port": state.https_port,
        "sygmax_app_processes": processes,
        "sygmax_app_profiles": list(PROFILES),
        "sygmax_app_migrate": migrate,
    }


@contextlib.contextmanager
def _runner_environment(venv: str) -> Iterator[None]:
    """ansible-playbook from the venv on PATH; no SYGMAX_* override leaks into the node's processes."""
    saved = dict(os.environ)
    for key in [key for key in os.environ if key.startswith("SYGMAX_")]:
        del os.environ[key]
    os.environ["PATH"] = f"{Path(venv) / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_playbook(
    state: ApplianceState,
    variables: dict,
    tags: str | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
) -> PlaybookResult:
    """Run the node playbook; raise :class:`ProvisionError` naming the failed task."""
    import ansible_runner

    private = state.layout.data / "ansible"
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    result = PlaybookResult()
    failures: list[str] = []

    def handle(event: dict) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event")
        task = (data.get("task") or "").strip()
        role = data.get("role", "")
        if kind == "playbook_on_task_start":
            result.tasks += 1
            report = TaskEvent("start", task, role)
        elif kind == "runner_on_ok":
            changed = bool(data.get("res", {}).get("changed"))
            if changed:
                result.changed.append(f"{role}: {task}" if role else task)
            report = TaskEvent("changed" if changed else "ok", task, role)
        elif kind == "runner_on_skipped":
            report = TaskEvent("skipped", task, role)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                return True
            res = data.get("res", {})
            detail = res.get("msg") or ""
            if res.get("censored"):
                detail = "output hidden because it may contain secrets; re-run with the same command to retry"
            elif res.get("stderr"):
                detail = f"{detail} {res['stderr']}".strip()
            failures.append(f"{role + ': ' if role else ''}{task}: {str(detail)[-1500:]}")
            report = TaskEvent("failed", task, role)
        else:
            return True
        if on_event is not None:
            on_event(report)
        return True

    interpreter = str(Path(state.venv) / "bin" / "python")
    with _runner_environment(state.venv):
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(PLAYBOOK),
            inventory=f"localhost ansible_connection=local ansible_python_interpreter={interpreter}",
            roles_path=[str(ROLES_DIR)],
            extravars=variables,
            tags=tags,
            quiet=True,
            event_handler=handle,
            rotate_artifacts=3,
            envvars={
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_LOCALHOST_WARNING": "False",
                "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_DEPRECATION_WARNINGS": "False",
            },
        )
    # Extra vars hold the node's secrets: never leave them in the runner's directory.
    shutil.rmtree(private / "env", ignore_errors=True)
    if runner.status != "successful" or failures:
        detail = "; ".join(failures)
        if not detail:
            output = runner.stdout.read() if runner.stdout else ""
            detail = (
                f"ansible-runner ended with status {runner.status} (rc {runner.rc}): {output.strip()[-1500:]}"
            )
        raise ProvisionError(
            f"provisioning failed at {detail}\n"
            f"logs: {private / 'artifacts'}; fix the cause and run the same command again"
        )
    # Results of no_log tasks are censored, "changed" included: count them from the stats.
    hidden = ((runner.stats or {}).get("changed", {}).get("localhost", 0)) - len(result.changed)
    if hidden > 0:
        result.changed.append(f"{hidden} task(s) whose output is hidden (they handle secrets)")
    return result
