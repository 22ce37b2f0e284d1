"""Bench-only: on ``PYTHONPATH`` of the services started by ``bench_gateway.py --trace``, installs
the query service's live-path timestamps (see ``bench/live_trace.py``); does nothing elsewhere."""

import os
import sys

if os.environ.get("TSMESH_BENCH_TRACE_DIR") and any("tsmesh_query" in arg for arg in sys.orig_argv):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import live_trace

    live_trace.install_query()
