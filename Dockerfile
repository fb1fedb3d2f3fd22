# syntax=docker/dockerfile:1
# authproxy: `docker build -t authproxy .`, then see deploy/README.md.
# The build stage makes wheels (authproxy's and its dependencies'); the runtime
# stage installs them from a bind mount, so neither the wheels nor any build
# tool ends up in the image.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authproxy ./authproxy
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="authproxy" \
      org.opencontainers.image.description="Reverse proxy that injects marketplace authentication"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    AUTHPROXY_CONFIG=/etc/authproxy/authproxy.toml \
    AUTHPROXY_SERVER__HOST=0.0.0.0 \
    AUTHPROXY_SERVER__PORT=8080
# Inside a container, loopback-only would be unreachable from the app next to it,
# hence 0.0.0.0: the compose and Kubernetes examples decide who can reach it
# (compose publishes no port; the Kubernetes sidecar sets 127.0.0.1 again).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin authproxy
USER 10001:10001
EXPOSE 8080
# No curl in slim images: the standard library asks for the liveness page.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_authproxy/healthz' % os.environ.get('AUTHPROXY_SERVER__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["authproxy"]
CMD ["serve"]
