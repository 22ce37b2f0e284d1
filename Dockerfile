# syntax=docker/dockerfile:1.7
# One image per service from one file, e.g. `docker build --target ingest -t tsmesh-ingest .`
# Targets: auth, ingest, query, gateway. Builds install exact pins from constraints.txt; the runtime
# stage is python-slim with the service's virtualenv only, running as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app

# ---- build: the shared packages, then one virtualenv per service ----
FROM base AS build-common
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /app/constraints.txt
COPY libs/proto /app/libs/proto
COPY libs/common /app/libs/common
RUN pip install -c /app/constraints.txt /app/libs/proto /app/libs/common

# Services are installed in place (-e) so their Alembic folders (services/<svc>/migrations) ship with them.
FROM build-common AS build-auth
COPY services/auth /app/services/auth
RUN pip install -c /app/constraints.txt -e /app/services/auth

FROM build-common AS build-ingest
COPY services/ingest /app/services/ingest
RUN pip install -c /app/constraints.txt -e /app/services/ingest

FROM build-common AS build-query
COPY services/query /app/services/query
RUN pip install -c /app/constraints.txt -e /app/services/query

FROM build-common AS build-gateway
COPY services/gateway /app/services/gateway
RUN pip install -c /app/constraints.txt -e /app/services/gateway

# ---- runtime: slim, non-root, a health probe for the container runtime ----
FROM base AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tsmesh \
    && useradd --system --uid 10001 --gid tsmesh --no-create-home --shell /usr/sbin/nologin tsmesh
# the container health probe (the gateway's readiness URL, or this process's gRPC health)
COPY --chmod=0755 deploy/docker/tsmesh-health /usr/local/bin/tsmesh-health
ENV PATH=/opt/venv/bin:$PATH \
    TSMESH_ENV=production \
    TSMESH_GRPC_HOST=0.0.0.0
USER 10001:10001

FROM runtime AS auth
COPY --from=build-auth /opt/venv /opt/venv
COPY --from=build-auth /app/services/auth /app/services/auth
ENV TSMESH_GRPC_PORT=50053 TSMESH_METRICS_PORT=9103
EXPOSE 50053 9103
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["tsmesh-health"]
ENTRYPOINT ["python", "-m", "tsmesh_auth"]

FROM runtime AS ingest
COPY --from=build-ingest /opt/venv /opt/venv
COPY --from=build-ingest /app/services/ingest /app/services/ingest
ENV TSMESH_GRPC_PORT=50051 TSMESH_METRICS_PORT=9101
EXPOSE 50051 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["tsmesh-health"]
ENTRYPOINT ["python", "-m", "tsmesh_ingest"]

FROM runtime AS query
COPY --from=build-query /opt/venv /opt/venv
COPY --from=build-query /app/services/query /app/services/query
ENV TSMESH_GRPC_PORT=50052 TSMESH_METRICS_PORT=9102
EXPOSE 50052 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["tsmesh-health"]
ENTRYPOINT ["python", "-m", "tsmesh_query"]

FROM runtime AS gateway
COPY --from=build-gateway /opt/venv /opt/venv
COPY --from=build-gateway /app/services/gateway /app/services/gateway
ENV TSMESH_HTTP_HOST=0.0.0.0 TSMESH_HTTP_PORT=8080 TSMESH_HEALTH_URL=http://127.0.0.1:8080/readyz
EXPOSE 8080 8081 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["tsmesh-health"]
ENTRYPOINT ["python", "-m", "tsmesh_gateway"]
