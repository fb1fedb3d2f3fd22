"""Run a compose file's services with plain `docker run`, for CI: `compose_run.py up|down FILE`.

Compose v2 is not in Debian bookworm, Debian's docker-compose 1.29 rejects the
file's top-level `name:`, and no PyPI package ships the real compose binary
with provenance. So CI reads deploy/compose.yaml itself and runs each service
the way compose would: one network `<name>_default` where each service is
reachable by its name, named volumes `<name>_<volume>`, containers
`<name>-<service>-1`, started in `depends_on` order, waiting for
`service_healthy`. Every key of the file is either translated here or refused
(the run fails naming it), so the check cannot drift from the file.

`--image FROM=TO` runs a local image instead of one that cannot be pulled
(python:3.12-slim-bookworm, redis:7-alpine); `--build-arg K=V` is given to
the services' builds. Each docker command is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER = os.environ.get("DOCKER", "docker")
LABEL = "authproxy.ci.compose-project"
TOP_LEVEL = {"name", "services", "volumes"}
SERVICE_KEYS = {
    "image",
    "build",
    "environment",
    "command",
    "entrypoint",
    "user",
    "read_only",
    "tmpfs",
    "cap_drop",
    "security_opt",
    "volumes",
    "healthcheck",
    "depends_on",
    "restart",
    "ports",
}
HEALTH_OPTIONS = {"interval": "--health-interval", "timeout": "--health-timeout"}
HEALTH_OPTIONS |= {"start_period": "--health-start-period", "retries": "--health-retries"}
VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\})")


class Refused(Exception):
    """The file uses something this runner does not translate."""


@dataclass
class Plan:
    """What `up` does: builds, volumes, then one container per service, in order."""

    project: str
    network: str
    builds: list[list[str]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    runs: dict[str, list[str]] = field(default_factory=dict)  # service -> docker run arguments
    waits: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> {dependency: condition}


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """${VAR}, ${VAR:-default}, ${VAR-default} and $$, as compose does, in every string."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if name is None:
            return "$"
        if operator == ":-" and not env.get(name):
            return str(default)
        if operator == "-" and name not in env:
            return str(default)
        return env.get(name, "")

    rest = VARIABLE.sub("", value)
    if "$" in rest:
        raise Refused(f"unsupported variable syntax in {value!r}")
    return VARIABLE.sub(substitute, value)


def container(project: str, service: str) -> str:
    return f"{project}-{service}-1"


def plan(compose: dict[str, Any], base: Path, images: Mapping[str, str], build_args: list[str]) -> Plan:
    unknown = {key for key in compose if not key.startswith("x-")} - TOP_LEVEL
    if unknown:
        raise Refused(f"top-level key(s) not translated: {sorted(unknown)}")
    project = compose["name"]
    result = Plan(project, f"{project}_default")
    volumes = compose.get("volumes") or {}
    for name, options in volumes.items():
        if options:
            raise Refused(f"volume {name}: options not translated: {options}")
        result.volumes.append(f"{project}_{name}")
    built: set[str] = set()
    for service in order(compose["services"]):
        spec = compose["services"][service]
        unknown = set(spec) - SERVICE_KEYS
        if unknown:
            raise Refused(f"service {service}: key(s) not translated: {sorted(unknown)}")
        if "build" in spec and spec["image"] not in built:
            built.add(spec["image"])
            result.builds.append(build_command(spec, base, build_args))
        result.runs[service] = run_arguments(project, service, spec, base, images, set(volumes))
        result.waits[service] = dependencies(spec)
    return result


def order(services: dict[str, Any]) -> list[str]:
    """Services in waves, as compose starts them: those without dependencies first, then
    those whose dependencies are all in earlier waves (file order within a wave)."""
    done: list[str] = []
    while len(done) < len(services):
        wave = [
            name
            for name, spec in services.items()
            if name not in done and all(dependency in done for dependency in dependencies(spec))
        ]
        if not wave:
            raise Refused(f"depends_on cycle among {sorted(set(services) - set(done))}")
        done += wave
    return done


def dependencies(spec: dict[str, Any]) -> dict[str, str]:
    depends = spec.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    conditions = {name: options.get("condition", "service_started") for name, options in depends.items()}
    for name, condition in conditions.items():
        if condition not in ("service_started", "service_healthy"):
            raise Refused(f"depends_on {name}: condition {condition} not translated")
    return conditions


def build_command(spec: dict[str, Any], base: Path, build_args: list[str]) -> list[str]:
    build = spec["build"]
    if set(build) - {"context", "dockerfile"}:
        raise Refused(f"build options not translated: {sorted(set(build) - {'context', 'dockerfile'})}")
    context = (base / build["context"]).resolve()
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    args = [item for arg in build_args for item in ("--build-arg", arg)]
    return ["build", "--network=host", *args, "-f", str(dockerfile), "-t", spec["image"], str(context)]


def run_arguments(
    project: str, service: str, spec: dict[str, Any], base: Path, images: Mapping[str, str], named: set[str]
) -> list[str]:
    args = ["--detach", "--name", container(project, service), "--label", f"{LABEL}={project}"]
    args += ["--network", f"{project}_default", "--network-alias", service]
    for key, value in spec.items():
        args += OPTIONS.get(key, lambda _: [])(value)
    args += [volume for item in spec.get("volumes", []) for volume in mount(project, item, base, named)]
    args += health(spec.get("healthcheck"))
    command = spec.get("command")
    command = shlex.split(command) if isinstance(command, str) else command
    entrypoint = spec.get("entrypoint")
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
    if entrypoint:  # docker run takes one executable: the rest go before the command
        args += ["--entrypoint", entrypoint[0]]
        command = [*entrypoint[1:], *(command or [])]
    image = images.get(spec["image"], spec["image"])
    return [*args, image, *(command or [])]


def environment(value: dict[str, Any] | list[str]) -> list[str]:
    if isinstance(value, list):
        return [part for item in value for part in ("--env", item)]
    items = [f"{key}={item}" if item is not None else key for key, item in value.items()]
    return [part for item in items for part in ("--env", item)]


def listed(flag: str) -> Callable[[Any], list[str]]:
    def options(value: Any) -> list[str]:
        return [part for item in ([value] if isinstance(value, str) else value) for part in (flag, item)]

    return options


OPTIONS: dict[str, Callable[[Any], list[str]]] = {
    "environment": environment,
    "user": lambda value: ["--user", str(value)],
    "read_only": lambda value: ["--read-only"] if value else [],
    "tmpfs": listed("--tmpfs"),
    "cap_drop": listed("--cap-drop"),
    "security_opt": listed("--security-opt"),
    "restart": lambda value: ["--restart", value],
    "ports": listed("--publish"),
}


def mount(project: str, item: Any, base: Path, named: set[str]) -> list[str]:
    if not isinstance(item, str):
        raise Refused(f"volume {item!r}: only the short syntax is translated")
    source, target, *mode = item.split(":")
    if source.startswith((".", "/")):
        source = str((base / source).resolve())
    elif source in named:
        source = f"{project}_{source}"
    else:
        raise Refused(f"volume {source} is not declared under the top-level volumes")
    return ["--volume", ":".join([source, target, *mode])]


def health(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    if check.get("disable"):
        return ["--no-healthcheck"]
    unknown = set(check) - {"test", *HEALTH_OPTIONS}
    if unknown:
        raise Refused(f"healthcheck option(s) not translated: {sorted(unknown)}")
    test = check["test"]
    if isinstance(test, str):
        command = test
    elif test[0] == "CMD-SHELL":
        command = test[1]
    elif test[0] == "CMD":  # docker run's --health-cmd is a shell command: quote the words
        command = shlex.join(test[1:])
    else:
        raise Refused(f"healthcheck test {test!r} not translated")
    options = [[flag, str(check[key])] for key, flag in HEALTH_OPTIONS.items() if key in check]
    return ["--health-cmd", command, *(part for pair in options for part in pair)]


def docker(*args: str) -> None:
    """A docker command that changes something: printed, then run."""
    print("+ docker " + shlex.join(args), flush=True)
    ask(*args, quiet=False)


def ask(*args: str, check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the docker client, with arguments made here)
        [DOCKER, *args], check=check, text=True, capture_output=quiet
    )


def state(name: str) -> dict[str, Any]:
    return dict(json.loads(ask("inspect", name).stdout)[0]["State"])


def wait_for(name: str, condition: str, deadline: float) -> float:
    """Until the container runs (or is healthy); returns the seconds waited."""
    start = time.monotonic()
    while True:
        current = state(name)
        health_status = current.get("Health", {}).get("Status")
        if not current["Running"]:
            raise SystemExit(f"compose_run: {name} exited ({current['ExitCode']}) before it was {condition}")
        if condition == "service_started" or health_status == "healthy":
            return time.monotonic() - start
        if health_status == "unhealthy":
            raise SystemExit(f"compose_run: {name} is unhealthy")
        if time.monotonic() > deadline:
            raise SystemExit(f"compose_run: {name} not {condition} within the deadline ({health_status})")
        time.sleep(0.2)  # polling docker's health state: there is no event to wait on here


def up(found: Plan, timeout: float) -> None:
    for build in found.builds:
        docker(*build)
    docker("network", "create", "--label", f"{LABEL}={found.project}", found.network)
    for volume in found.volumes:
        docker("volume", "create", "--label", f"{LABEL}={found.project}", volume)
    deadline = time.monotonic() + timeout
    for service, args in found.runs.items():
        for dependency, condition in found.waits[service].items():
            waited = wait_for(container(found.project, dependency), condition, deadline)
            what = condition.removeprefix("service_")
            print(f"compose_run: {service} waited {waited:.1f} s for {dependency} {what}")
        docker("run", *args)
    for service in found.runs:  # as `docker compose up --wait`: every service running, healthy if checked
        name = container(found.project, service)
        condition = "service_healthy" if "Health" in state(name) else "service_started"
        waited = wait_for(name, condition, deadline)
        print(f"compose_run: up --wait: {service} {condition.removeprefix('service_')} (+{waited:.1f} s)")


def down(found: Plan, stop_within: float) -> None:
    """Stop the services, dependants first, timing each; then remove everything."""
    slow = []
    for service in reversed(list(found.runs)):
        name = container(found.project, service)
        if ask("inspect", name, check=False).returncode:
            continue
        start = time.monotonic()
        docker("stop", name)
        took = time.monotonic() - start
        code = state(name)["ExitCode"]
        print(f"compose_run: {service} stopped in {took:.1f} s, exit {code}")
        if took > stop_within or code not in (0, 143):
            slow.append(f"{service} ({took:.1f} s, exit {code})")
    remove(found.project)
    if slow:
        within = f"within {stop_within} s with exit 0/143"
        raise SystemExit(f"compose_run: not stopped {within}: {', '.join(slow)}")


def remove(project: str) -> None:
    label = f"label={LABEL}={project}"
    for kind in ("container", "network", "volume"):
        names = ask(
            kind, "ls", "-q", "--filter", label, *(["--all"] if kind == "container" else [])
        ).stdout.split()
        if names:
            docker(kind, "rm", *(["--force", "--volumes"] if kind == "container" else []), *names)


def load(path: Path) -> dict[str, Any]:
    import yaml  # type: ignore[import-untyped]  # from the test extra

    return dict(interpolate(yaml.safe_load(path.read_text()), os.environ))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="compose_run.py")
    parser.add_argument("action", choices=["up", "down", "plan"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--image", action="append", default=[], metavar="FROM=TO")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for `up` to be healthy")
    parser.add_argument("--stop-within", type=float, default=5.0, help="seconds each `docker stop` may take")
    args = parser.parse_args(argv)
    images = dict(item.split("=", 1) for item in args.image)
    try:
        found = plan(load(args.file), args.file.resolve().parent, images, args.build_arg)
    except Refused as exc:
        raise SystemExit(f"compose_run: {args.file}: {exc}") from None
    if args.action == "plan":
        for build in found.builds:
            print("docker " + shlex.join(build))
        for args_ in found.runs.values():
            print("docker run " + shlex.join(args_))
    elif args.action == "up":
        up(found, args.timeout)
    else:
        down(found, args.stop_within)


if __name__ == "__main__":
    main()
