# authproxy: `docker build -t authproxy .`, then see deploy/README.md.
# No `# syntax=` line on purpose: it makes every build fetch a frontend from
# Docker Hub. The engine's own BuildKit (DOCKER_BUILDKIT=1) builds this file,
# `RUN --mount` included, so it builds offline from a local base image:
#   docker build --build-arg PYTHON_IMAGE=<local python image> -t authproxy .
# The build stage fetches the pinned dependencies (requirements/runtime.txt,
# every file checked against its sha256) and makes authproxy's wheel with the
# pinned backend (requirements/build.txt); the runtime stage installs those
# files from a bind mount, so neither the wheels nor any build tool ends up in
# the image. Two builds of one commit install the same versions.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN pip install --require-hashes --only-binary=:all: -r requirements/build.txt \
    && pip download --require-hashes --only-binary=:all: --dest /wheels -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY authproxy ./authproxy
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

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
# The pinned dependencies (hashes checked again), then authproxy without
# resolving anything; `pip check` fails the build when the pins miss one of
# authproxy's dependencies (run requirements/lock.sh). Group and user are both
# 10001, so `USER 10001:10001` names a group that exists.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes --only-binary=:all: \
        -r /requirements/runtime.txt \
    && pip install --no-cache-dir --no-index --no-deps /wheels/authproxy-*.whl \
    && pip check \
    && groupadd --gid 10001 authproxy \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin authproxy
USER 10001:10001
EXPOSE 8080
# No curl in slim images: the standard library asks for the liveness page.
# Docker runs the first check one --interval after the start, so whatever
# waits for "healthy" (compose's service_healthy) waits at least 5 s; an engine
# of 25 or later can check sooner with `--start-interval` in a compose file.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_authproxy/healthz' % os.environ.get('AUTHPROXY_SERVER__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["authproxy"]
CMD ["serve"]
