"""Bench-only: on ``PYTHONPATH`` of the services started by ``bench_gateway.py --trace``, installs
the ingest API's and the query service's live-path timestamps (see ``bench/live_trace.py``); does nothing elsewhere."""

import os
import sys

if os.environ.get("TSMESH_BENCH_TRACE_DIR"):
    role = next((r for r in ("tsmesh_query", "tsmesh_ingest") if any(r in arg for arg in sys.orig_argv)), None)
    if role is not None and os.environ.get("TSMESH_INGEST_MODE") != "writer":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import live_trace

        live_trace.install_query() if role == "tsmesh_query" else live_trace.install_ingest()
