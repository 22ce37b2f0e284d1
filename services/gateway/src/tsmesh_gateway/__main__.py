"""``python -m tsmesh_gateway``: serve the gateway with Granian (``TSMESH_GATEWAY_WORKERS`` workers).

Each worker builds its own application through :func:`tsmesh_gateway.app.create_app` (its own
channels, Redis pool, caches and WebSocket hub); state shared between workers lives in Redis only.
With more than one worker, Prometheus runs in multiprocess mode over a fresh directory so
``/metrics`` answers for every worker whichever one serves the scrape.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tsmesh_common.config import load_or_exit
from tsmesh_gateway.config import LISTEN_BACKLOG, GatewayConfig
from tsmesh_gateway.stream.socket_budget import raise_open_file_limit


def main() -> None:
    raise_open_file_limit()  # before the budget of sockets per worker is derived from it
    cfg = load_or_exit(GatewayConfig.from_env, os.environ)
    if cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tsmesh-gateway-metrics-")
    from granian import Granian
    from granian.constants import Interfaces, Loops, SSLProtocols

    server = Granian(
        "tsmesh_gateway.app:create_app",
        factory=True,
        address=cfg.http_host,
        port=cfg.http_port,
        interface=Interfaces.ASGI,
        workers=cfg.workers,
        loop=Loops.uvloop,
        websockets=True,
        backlog=LISTEN_BACKLOG,
        log_access=False,
        ssl_cert=Path(cfg.tls_cert) if cfg.tls_cert else None,
        ssl_key=Path(cfg.tls_key) if cfg.tls_key else None,
        ssl_protocol_min=SSLProtocols.tls12,
    )
    server.serve()
    sys.exit(0)


if __name__ == "__main__":
    main()
