"""server.store_url: every form it takes, and a bad one named by the part that is wrong
(never echoing the password)."""

from __future__ import annotations

import pytest

from authproxy.errors import ConfigError
from authproxy.settings import ServerSettings, Settings
from authproxy.store_address import parse_store_url


def test_standalone_forms_pass_through_as_written() -> None:
    for url in ["redis://127.0.0.1:6379/2", "rediss://u:p@host/0", "unix:///run/redis.sock?db=3"]:
        address = parse_store_url(url)
        assert (address.mode, address.url) == ("standalone", url)
    assert parse_store_url("redis://h:7000/4").hosts == (("h", 7000),)
    assert parse_store_url("redis://h:7000/4").db == 4
    assert parse_store_url("memory://").mode == "memory"


def test_sentinel_hosts_service_db_credentials_and_tls() -> None:
    address = parse_store_url("rediss+sentinel://ops:s%40cret@s1:26380,s2,[::1]:26381/main/3")
    assert address.mode == "sentinel" and address.tls
    assert address.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (address.service, address.db) == ("main", 3)
    assert (address.username, address.password) == ("ops", "s@cret")
    assert "s@cret" not in repr(address)
    assert parse_store_url("redis+sentinel://s1/main").db == 0


def test_cluster_seed_nodes() -> None:
    address = parse_store_url("redis+cluster://:pw@n1:7000,n2:7001")
    assert address.mode == "cluster" and not address.tls
    assert address.hosts == (("n1", 7000), ("n2", 7001))
    assert (address.username, address.password) == (None, "pw")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://h", "unknown scheme 'http'"),
        ("redis+sentinel://u:hunter2@s1:2x/main", "host 1 (s1) has a bad port '2x'"),
        ("redis+sentinel://u:hunter2@s1,:1/main", "host 2 is empty"),
        ("redis+sentinel://u:hunter2@s1:26379", "service name is missing"),
        ("redis+sentinel://u:hunter2@s1/main/x", "database must be a number"),
        ("redis+sentinel://u:hunter2@s1/main/1/2", "nothing more"),
        ("redis+cluster://u:hunter2@n1:7000/1", "has no path"),
        ("redis://u:hunter2@a:1,b:2/0", "takes one host"),
        ("redis://u:hunter2@a:99999/0", "bad port '99999'"),
        ("unix://relative.sock", "absolute socket path"),
    ],
)
def test_a_bad_url_names_the_wrong_part_and_never_the_password(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_store_url(url)
    assert named in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_start_up_refuses_a_bad_store_url() -> None:
    with pytest.raises(ValueError, match="service name is missing"):
        ServerSettings(store_url="redis+sentinel://s1:26379")
    server = Settings(server={"store_url": "redis+cluster://n1:7000", "store_wait_replicas": 1}).server
    assert server.store.address.mode == "cluster"
    assert (server.store.wait_replicas, server.store.wait_ms) == (1, 200)
    assert ServerSettings().store.wait_replicas is None  # auto: 1 when the master has replicas
