"""The ai module: local LLM text tools, speech-to-text, named entities and semantic search.

Models run only in the ``ai`` profile's process (``sygmax run ai``), started here by the
start-up hook; api processes answer /api/v1/ai/* by talking to it over Redis, and the worker
profile's consumers index chat messages and feed items and queue background jobs. Nothing in
this import path loads a model library.
"""

from pathlib import Path

from plugins.ai.api import HANDLERS
from plugins.ai.settings import AiSettings
from plugins.ai.workers import HANDLERS as EVENT_HANDLERS
from sygmax.plugins import ConsumerSpec, Permission, Plugin, UIPage

_servers: dict[int, object] = {}


async def start_model_server(kernel) -> None:
    if "ai" not in kernel.profiles:
        return
    from plugins.ai.server import ModelServer  # only the ai process gets here

    server = ModelServer(kernel)
    _servers[id(kernel)] = server
    await server.start()


async def stop_model_server(kernel) -> None:
    server = _servers.pop(id(kernel), None)
    if server is not None:
        await server.stop()


plugin = Plugin(
    name="ai",
    version="1",
    description="Local AI: summaries, corrections, tags, translation, transcription, entities, semantic search",
    http_handlers=HANDLERS,
    migrations=Path(__file__).parent / "migrations",
    consumers=[ConsumerSpec("index", EVENT_HANDLERS)],
    permissions=[Permission("ai.use", "Use the AI tools and semantic search", default_roles=("editor", "viewer"))],
    settings=AiSettings,
    ui_pages=[UIPage("/ai", "AI assistant", icon="sparkles")],
    on_startup=[start_model_server],
    on_shutdown=[stop_model_server],
)
