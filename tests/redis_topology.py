"""Redis as production runs it, started privately for a test: a master with a replica
watched by three Sentinels, a six-node Cluster, and a TCP relay the test controls to
cut replication (a partition: the write stays with the master, the replica never sees it).

Sentinels judge a master down after 1 s (`down-after-milliseconds 1000`) and the cluster
after 1 s (`cluster-node-timeout 1000`), so failovers take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import REQUIRE_REDIS
from tests.procs import free_port
from tests.redis_server import RedisServer

SERVICE = "authproxy-test"
START_TIMEOUT = 60.0  # generous: CI runs on two loaded cores
START_ATTEMPTS = 3


def binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if REQUIRE_REDIS:
            pytest.fail("AUTHPROXY_REQUIRE_REDIS=1 but redis-server or redis-cli is not installed")
        pytest.skip("redis-server or redis-cli is not installed")
    return server, cli


def wait_for(what: str, check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    """Poll `check` (an external server's state: nothing to wait on but asking) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Node(RedisServer):
    """A redis-server with extra options (replica of, cluster mode, sentinel mode)."""

    def __init__(self, binary: str, directory: Path, extra: list[str], *, sentinel: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(binary, free_port(), directory)
        self.extra, self.sentinel = extra, sentinel

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def start(self) -> None:
        """Start on a free port: one another process took between `free_port` and the bind
        (redis-server exits) is swapped for a fresh one, with a fresh cluster bus port too."""
        for _ in range(START_ATTEMPTS):
            if self._started():
                return
            self.port = free_port()
            self.extra = [
                str(free_port()) if prev == "--cluster-port" else arg for prev, arg in _pairs(self.extra)
            ]
        raise AssertionError(f"redis-server exited {START_ATTEMPTS} times at start: see {self.directory}/log")

    def _started(self) -> bool:
        """Whether the server answers; False when it exited first (its port was taken)."""
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.sentinel:
            conf = self.directory / "sentinel.conf"
            conf.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1", *self.extra]) + "\n")
            command = [self.binary, str(conf), "--sentinel"]
        else:
            command = [self.binary, *base, "--dir", str(self.directory), *self.extra]
        log = open(self.directory / "log", "ab")  # noqa: SIM115  # the process keeps it
        process = self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        # no retries, short timeouts: a port's other owner must not hold up seeing this one exit
        client = redis.Redis(
            port=self.port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:  # this server's answer: another one on the port (ours is exiting) does not count
            wait_for(
                f"redis on {self.port}",
                lambda: process.poll() is not None or client.info("server")["process_id"] == process.pid,
            )
        finally:
            client.close()
        return process.poll() is None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(19)  # SIGSTOP

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(18)  # SIGCONT


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    """Each argument with the one before it ("" for the first)."""
    return list(zip(["", *args], args, strict=False))


class Relay:
    """A TCP forwarder, in a thread of its own, from `port` to `target`. `cut()` stops
    forwarding on every connection that carries replication (it sent REPLCONF):
    the bytes stay unread, as across a partition; `mend()` resumes."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target = free_port(), target_port
        self.loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def start(self) -> None:
        self._thread.start()

        async def open_() -> None:
            self._flowing.set()
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(open_(), self.loop).result(10)

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.clear)

    def mend(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.set)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        replication = [False]
        await asyncio.gather(
            self._pipe(reader, up_writer, replication, watch=True),
            self._pipe(up_reader, writer, replication, watch=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flags: list[bool], *, watch: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if watch and b"REPLCONF" in chunk.upper():  # a replica's handshake
                    flags[0] = True
                if flags[0]:
                    await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()


class SentinelSet:
    """A master, one replica (replicating through a Relay), three Sentinels."""

    def __init__(self, directory: Path) -> None:
        server, _ = binaries()
        self.directory = directory
        quick = ["--repl-diskless-sync-delay", "0"]
        self.master = Node(server, directory / "a", quick)
        self.master.start()
        self.relay = Relay(self.master.port)
        self.relay.start()
        self.replica = Node(
            server, directory / "b", ["--replicaof", "127.0.0.1", str(self.relay.port), *quick]
        )
        self.replica.start()
        self.wait_replicated()
        monitor = [
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 4000",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        self.sentinels = [Node(server, directory / f"s{i}", monitor, sentinel=True) for i in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for("sentinels to know each other and the replica", self._sentinels_ready)

    def wait_replicated(self) -> None:
        client = self.replica.client()
        try:
            wait_for("the replica to sync", lambda: client.info("replication")["master_link_status"] == "up")
        finally:
            client.close()

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state: dict[str, Any] = client.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
            finally:
                client.close()
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def master_port(self) -> int:
        client = self.sentinels[0].client()
        try:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            client.close()

    def wait_failover(self, old_port: int, timeout: float = START_TIMEOUT) -> None:
        """Until Sentinel names another master and that one takes writes."""

        def moved() -> bool:
            port = self.master_port()
            if port == old_port:
                return False
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                return client.info("replication")["role"] == "master"
            finally:
                client.close()

        wait_for("the failover", moved, timeout)

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            with contextlib.suppress(Exception):
                node.resume()
                node.kill()
        self.relay.stop()


class ClusterSet:
    """Three primaries, each with a replica; `cluster-node-timeout 1000`."""

    def __init__(self, directory: Path, primaries: int = 3) -> None:
        server, cli = binaries()
        options = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
        ]
        self.nodes = [
            Node(
                server,
                directory / f"n{i}",
                [*options, "--cluster-config-file", f"nodes-{i}.conf", "--cluster-port", str(free_port())],
            )
            for i in range(primaries * 2)
        ]
        self.relays: list[Relay] = []
        try:
            for node in self.nodes:
                node.start()
            hosts = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *hosts, "--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
            )
            wait_for("the cluster to be ready", self._ready)
        except BaseException:
            self.stop()  # a node that did not come up must not leave the others running
            raise

    def _ready(self) -> bool:
        for node in self.nodes:
            client = node.client()
            try:
                info = client.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(self.nodes)}" not in info:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            finally:
                client.close()
        return True

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])

    def node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def primary_of(self, key: str) -> Node:
        client = self.nodes[0].client()
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node_on(int(primary[1]))
        finally:
            client.close()
        raise AssertionError(f"no primary for {key}")

    def relay_replication_of(self, primary: Node) -> Relay:
        """Put a Relay in front of `primary`: it announces the relay's port, so its replica
        (and any client that asks the cluster) reaches it through the relay from now on."""
        relay = Relay(primary.port)
        relay.start()
        self.relays.append(relay)
        client = primary.client()
        try:
            client.config_set("cluster-announce-port", relay.port)
        finally:
            client.close()
        replica = next(node for node in self.nodes if self._master_port(node) in (primary.port, relay.port))

        def through_relay() -> bool:
            client = replica.client()
            try:
                info = client.info("replication")
            finally:
                client.close()
            return int(info["master_port"]) == relay.port and info["master_link_status"] == "up"

        wait_for("the replica to replicate through the relay", through_relay)
        return relay

    def _master_port(self, node: Node) -> int | None:
        client = node.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        return int(info["master_port"]) if info["role"] == "slave" else None

    def wait_promoted(self, *dead_ports: int, timeout: float = START_TIMEOUT) -> None:
        """Until every slot is served again by a live primary (none on `dead_ports`)."""
        live = [node for node in self.nodes if node.port not in dead_ports]

        def served() -> bool:
            client = live[0].client()
            try:
                if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO").decode():
                    return False
                primaries = {int(p[1]) for _, _, p, *_ in client.execute_command("CLUSTER", "SLOTS")}
            finally:
                client.close()
            return not primaries & set(dead_ports)

        wait_for("a replica promoted in the dead primary's place", served, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.resume()
                node.kill()
        for relay in self.relays:
            relay.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    made = SentinelSet(tmp_path / "sentinel")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def cluster_set(tmp_path: Path) -> Iterator[ClusterSet]:
    made = ClusterSet(tmp_path / "cluster")
    try:
        yield made
    finally:
        made.stop()
