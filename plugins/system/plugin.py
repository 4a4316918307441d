"""The system module: what this installation runs, for the web UI shell and admins."""

from sygmax.plugins import Permission, Plugin, UIPage

from plugins.system.api import info, list_plugins, list_users, list_workspaces, public

plugin = Plugin(
    name="system",
    version="1",
    description="Installation facts: version, process profiles, enabled modules and what they declare",
    http_handlers=[public, info, list_plugins, list_users, list_workspaces],
    permissions=[Permission("system.view", "See the installation's version and modules")],
    ui_pages=[UIPage("/admin/system", "System status", icon="server")],
)
