# tsmesh developer entry points. `make run` brings the mesh up; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := -e libs/proto -e libs/common -e services/auth -e services/ingest -e services/query -e services/gateway
PROTO_OUT := libs/proto
PROTOS := $(wildcard protos/tsmesh/v1/*.proto)
STAMP := $(VENV)/.installed

.PHONY: tools install run test lint typecheck contracts unit check-protos protos bench bench-tools bench-auth bench-ingest bench-query bench-gateway bench-gateway-100k clean

$(STAMP): requirements-dev.txt constraints.txt libs/*/pyproject.toml services/*/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt $(PACKAGES)
	@touch $@

install: $(STAMP)

run: $(STAMP)
	@exec $(PY) scripts/devstack.py

protos: $(STAMP)
	$(PY) scripts/gen_protos.py $(PROTO_OUT)

check-protos: $(STAMP)
	$(PY) scripts/gen_protos.py --check $(PROTO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: tools lint typecheck check-protos
	$(PY) -m pytest

bench-auth: $(STAMP)
	$(PY) bench/bench_auth.py

bench-ingest: $(STAMP)
	$(PY) bench/bench_ingest.py

bench-query: $(STAMP)
	$(PY) bench/bench_query.py

# Real clients the tests drive, from Debian's packages (command=package; installed when missing)
TEST_TOOLS := promtool=prometheus
# wrk drives the HTTP part of bench-gateway
BENCH_TOOLS := wrk=wrk

tools:
	@scripts/debian_tools.sh $(TEST_TOOLS)

bench-tools:
	@scripts/debian_tools.sh $(BENCH_TOOLS)

bench-gateway: $(STAMP) bench-tools
	$(PY) bench/bench_gateway.py

bench-gateway-100k: $(STAMP)
	$(PY) bench/bench_gateway.py --idle-100k

bench: bench-auth bench-ingest bench-query bench-gateway

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
