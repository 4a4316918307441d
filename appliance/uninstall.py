"""``sygmax uninstall [--keep-data]``: stop everything and remove what ``sygmax install`` made.

With ``--keep-data`` the databases, objects, keys, certificates, the secrets and the node's
settings stay, so a later ``sygmax install`` with the same prefix picks them up again.
System users (sygmax) and apt packages stay, as Debian leaves system users on purge.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from appliance.layout import ApplianceState
from appliance.preflight import pid1_is_systemd
from appliance.supervisor import Supervisor


def uninstall(state: ApplianceState, keep_data: bool) -> list[str]:
    layout = state.layout
    done: list[str] = []
    sup = Supervisor(state)
    unit = Path("/etc/systemd/system") / f"{layout.instance}.service"
    if unit.exists() and pid1_is_systemd():
        subprocess.run(["systemctl", "disable", "--now", unit.name], check=False, capture_output=True)
        unit.unlink()
        subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)
        done.append(f"removed {unit}")
    if sup.shutdown():
        done.append("stopped every process and supervisord")
    keep = {layout.secrets_file, layout.state_file} if keep_data else set()
    for directory in (layout.log, layout.run, layout.opt):
        if directory.exists():
            shutil.rmtree(directory)
            done.append(f"removed {directory}")
    if layout.etc.exists():
        for path in sorted(layout.etc.iterdir()):
            if path in keep:
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if not keep:
            layout.etc.rmdir()
        done.append(f"removed {layout.etc}" + (" (kept secrets.json, appliance.json)" if keep else ""))
    if not keep_data and layout.data.exists():
        shutil.rmtree(layout.data)
        done.append(f"removed {layout.data}")
    elif keep_data and (layout.data / "ansible").exists():
        shutil.rmtree(layout.data / "ansible")
    return done
