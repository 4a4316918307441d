"""``sygmax scale api=3 realtime=2``: change how many processes of each profile run, dropping no request.

The new counts are recorded, the sygmax_app role rewrites the supervisor files (only its
``processes`` tasks run), then :func:`appliance.node.converge_programs` starts new processes,
waits for their health, swaps Caddy's upstreams, and only then stops the ones removed.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.layout import ApplianceState
from appliance.node import Changes, converge_programs, ensure_supervisor
from appliance.runner import extravars, run_playbook
from appliance.secrets import load_or_create_secrets, render_config


def scale(
    state: ApplianceState, counts: dict[str, int], progress: Callable[[str], None] | None = None
) -> list[str]:
    previous = dict(state.processes)
    state.processes = {**state.processes, **counts}
    state.validate()
    changes = Changes()
    ensure_supervisor(state)
    if state.processes != previous:
        state.save()
        changes.add(
            ", ".join(
                f"{name} {previous.get(name, 0)} -> {count}"
                for name, count in counts.items()
                if previous.get(name, 0) != count
            )
        )
    node_secrets, _ = load_or_create_secrets(state.layout.secrets_file)
    variables = extravars(
        state, node_secrets, render_config(state, node_secrets), manage_packages=False, migrate=False
    )
    run_playbook(state, variables, tags="processes")
    converge_programs(state, changes, progress=progress)
    return changes.items
