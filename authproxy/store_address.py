"""Where the token store is: `server.store_url` parsed, pure (no I/O, no redis-py).

    memory://                                          one process, nothing shared
    redis://[user:pass@]host[:port][/db]               standalone (or a managed endpoint)
    rediss://...                                       the same over TLS
    unix://[user:pass@]/path/to/socket[?db=N]          standalone on a local socket
    redis+sentinel://[user:pass@]h1:p1,h2:p2/<service>[/db]
                                                       ask these Sentinels for <service>'s master
    rediss+sentinel://...                              the same, TLS to the master (and Sentinels)
    redis+cluster://[user:pass@]h1:p1,h2:p2            Redis Cluster, these nodes to start from
    rediss+cluster://...                               the same over TLS

A URL that does not fit raises ConfigError naming the part that is wrong; the
message never repeats the password (nor, for safety, the user).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from authproxy.errors import ConfigError

Mode = Literal["memory", "standalone", "sentinel", "cluster"]
DEFAULT_PORT = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}
SCHEMES: dict[str, tuple[Mode, bool]] = {
    "memory": ("memory", False),
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True)
class StoreAddress:
    mode: Mode
    #: the URL to hand redis-py for standalone and unix (as written); "" otherwise
    url: str = ""
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_store_url(url: str) -> StoreAddress:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(f"server.store_url: unknown scheme {scheme.split('@')[-1][:20]!r} (one of {known})")
    mode, tls = SCHEMES[scheme.lower()]
    if mode == "memory":
        return StoreAddress("memory")
    if mode == "standalone":
        return _standalone(url, rest, scheme.lower())
    user, password, hostpart = _credentials(rest)
    hostlist, _, path = hostpart.partition("/")
    hosts = _hosts(hostlist, DEFAULT_PORT[mode])
    if mode == "cluster":
        if path.strip("/"):
            raise ConfigError("server.store_url: a redis+cluster:// URL has no path (Cluster has only db 0)")
        return StoreAddress("cluster", hosts=hosts, tls=tls, username=user, password=password)
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise ConfigError("server.store_url: the Sentinel service name is missing (…/<service>[/db])")
    if len(parts) > 2:
        raise ConfigError("server.store_url: after the hosts comes /<service>[/db], nothing more")
    db = _db(parts[1]) if len(parts) == 2 else 0
    return StoreAddress(
        "sentinel", hosts=hosts, service=unquote(parts[0]), db=db, tls=tls, username=user, password=password
    )


def _standalone(url: str, rest: str, scheme: str) -> StoreAddress:
    _, _, hostpart = _credentials(rest)
    if scheme == "unix":
        if not hostpart.startswith("/"):
            raise ConfigError("server.store_url: a unix:// URL needs an absolute socket path")
        return StoreAddress("standalone", url=url)
    hostlist, _, path = hostpart.partition("/")
    hosts = _hosts(hostlist, DEFAULT_PORT["standalone"])
    if len(hosts) != 1:
        raise ConfigError(
            "server.store_url: redis:// takes one host; for several use redis+sentinel:// or redis+cluster://"
        )
    db_text = path.partition("?")[0].strip("/")
    return StoreAddress("standalone", url=url, hosts=hosts, db=_db(db_text) if db_text else 0)


def _credentials(rest: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return None, None, rest
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None), hostpart


def _hosts(text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hostlist = text.partition("?")[0]
    if not hostlist:
        raise ConfigError("server.store_url: no host given")
    hosts = []
    for number, item in enumerate(hostlist.split(","), 1):
        host, port = _host_port(item, number, default_port)
        hosts.append((host, port))
    return tuple(hosts)


def _host_port(item: str, number: int, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, tail = item[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ConfigError(f"server.store_url: host {number} is empty")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"server.store_url: host {number} ({host}) has a bad port {port_text[:10]!r}")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"server.store_url: the database must be a number, not {text[:20]!r}")
    return int(text)
