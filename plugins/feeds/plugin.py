"""The feeds module's plugin object (being built; see the open issue)."""

from sygmax.plugins import Plugin

plugin = Plugin(name="feeds", version="1")
