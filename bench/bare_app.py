"""A bare Litestar app: the reference point for Sygmax's per-request overhead.

``python -m bench.bare_app granian|uvicorn PORT WORKERS`` serves it with exactly the
server options ``sygmax run`` uses (cli/commands/run.py), so only the app differs.
"""

from __future__ import annotations

import sys

from litestar import Litestar, get


@get("/healthz", cache=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[healthz], debug=False)

TARGET = "bench.bare_app:app"


def serve(server: str, port: int, workers: int, host: str = "127.0.0.1") -> None:
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            TARGET, address=host, port=port, interface=Interfaces.ASGI, workers=workers,
            loop=Loops.uvloop, log_access=False, websockets=True,
        ).serve()
    elif server == "uvicorn":
        import uvicorn

        uvicorn.run(TARGET, host=host, port=port, workers=workers, loop="uvloop",
                    http="httptools", access_log=False, lifespan="on")
    else:
        raise SystemExit(f"unknown server {server!r}: granian or uvicorn")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
