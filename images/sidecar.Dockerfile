# syntax=docker/dockerfile:1
# Image of the gateway sidecar (cmcp). Build from the repository root (docs/images.md):
#   docker build -f images/sidecar.Dockerfile \
#     --build-arg RUNTIME_BASE=gcr.io/distroless/python3-debian12:nonroot@sha256:<digest> \
#     -t ghcr.io/confidential-mcp/cmcp-sidecar:0.1.0 .
#
# Both stages are Debian 12, so the runtime's python3.11 is the one the virtualenv was built
# with. The runtime stage has no shell and no package manager; it runs as UID 65532.

# Exact Debian point release; pass BUILD_BASE=debian:12.8-slim@sha256:<digest> to pin harder.
ARG BUILD_BASE=debian:12.8-slim
# No default on purpose: the distroless image has no versioned tags, so it is pinned by digest.
ARG RUNTIME_BASE

FROM ${BUILD_BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md LICENSE /src/
COPY verifier /src/verifier
COPY sidecar /src/sidecar
COPY operator /src/operator
COPY e2e/cmcp_e2e /src/e2e/cmcp_e2e
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile "/src[sidecar]" \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${RUNTIME_BASE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/venv/bin/cmcp"]
CMD ["start", "--config", "/etc/cmcp/config/cmcp-config.yaml"]
