"""/_authproxy/metrics through the real app: every metric moves with the traffic.

Requests by app and status, upstream latency, refreshes by outcome, lock
waits, replays and seconds to expiry, against the sellercenter and oauth2
sandboxes; then `serve --workers 2`, where a scrape must count the requests
of both workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from tests.conftest import oauth2_app, settings_for, url_of
from tests.procs import ROOT, free_port, to_toml

LIFETIME = 3600.0


class Scrape:
    """One exposition page, parsed by prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, label: str) -> set[str]:
        return {value for _, labels in self.values for key, value in labels if key == label}


async def scrape(client: Any) -> Scrape:
    reply = await client.get("/_authproxy/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(await reply.text())


def gfg(base: str) -> dict[str, Any]:
    return {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}


async def sellercenter(serve, clock) -> tuple[SellerCenterSandbox, str]:
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock, lifetime=LIFETIME)
    return sandbox, url_of(await serve(sandbox.app()))


async def test_requests_latency_refresh_lock_and_expiry(serve, proxy_client, stores, clock):
    sandbox, base = await sellercenter(serve, clock)
    client = await proxy_client(settings_for({"gfg": gfg(base)}), stores.make(), clock)
    before = await scrape(client)
    assert before("authproxy_requests_total", app="gfg", status="200") == 0
    for _ in range(3):
        assert (await client.get("/gfg/shop1/v2/orders")).status == 200
    assert (await client.get("/no-such-app/shop1/v2/orders")).status == 404
    after = await scrape(client)
    assert after("authproxy_requests_total", app="gfg", status="200") == 3
    assert after("authproxy_requests_total", app="-", status="404") == 1
    assert "no-such-app" not in after.label_values("app"), "clients cannot add label values"
    assert after("authproxy_upstream_seconds_count", app="gfg") == 3
    assert after("authproxy_upstream_seconds_bucket", app="gfg", le="+Inf") == 3
    assert after("authproxy_upstream_seconds_sum", app="gfg") > 0
    assert after("authproxy_refreshes_total", app="gfg", outcome="ok") == sandbox.stats.token_calls == 1
    assert after("authproxy_lock_wait_seconds_count") == 1
    assert after("authproxy_token_expiry_seconds", app="gfg", shop="shop1") == LIFETIME
    expires_at = clock.now() + LIFETIME
    assert after("authproxy_token_expiry_timestamp_seconds", app="gfg", shop="shop1") == expires_at
    clock.advance(600)
    later = await scrape(client)
    assert later("authproxy_token_expiry_seconds", app="gfg", shop="shop1") == LIFETIME - 600


async def test_a_replay_and_its_refresh(serve, proxy_client, stores, clock):
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock, lifetime=LIFETIME)
    base = url_of(await serve(sandbox.app()))
    app = oauth2_app(base, sandbox.seed_refresh_token())
    client = await proxy_client(settings_for({"crm": app}), stores.make(), clock)
    assert (await client.get("/crm/acme/api/contacts")).status == 200
    sandbox.book.expire_all()  # revoked upstream; by its own expiry the token still looks good
    reply = await client.get("/crm/acme/api/contacts")
    assert reply.status == 200 and reply.headers["X-AuthProxy-Retried"] == "1"
    metrics = await scrape(client)
    assert metrics("authproxy_replays_total", app="crm") == 1
    assert metrics("authproxy_refreshes_total", app="crm", outcome="ok") == 2
    assert metrics("authproxy_upstream_seconds_count", app="crm") == 3  # the replay is a second call
    assert metrics("authproxy_requests_total", app="crm", status="200") == 2
    assert metrics("authproxy_lock_wait_seconds_count") == 2


async def test_failed_and_rejected_refreshes(serve, proxy_client, stores, clock):
    sandbox, base = await sellercenter(serve, clock)
    oauth = OAuth2Sandbox("cid", "csecret", clock=clock)
    oauth_base = url_of(await serve(oauth.app()))
    crm = oauth2_app(oauth_base, oauth.seed_refresh_token())
    settings = settings_for({"gfg": gfg(base), "crm": crm})
    client = await proxy_client(settings, stores.make(), clock)
    assert (await client.get("/gfg/shop1/v2/orders")).status == 200
    sandbox.knobs.token_status = 500
    clock.advance(LIFETIME + 1)
    assert (await client.get("/gfg/shop1/v2/orders")).status == 502
    oauth.knobs.reject_refresh = True
    assert (await client.get("/crm/acme/api/contacts")).status == 401
    metrics = await scrape(client)
    assert metrics("authproxy_refreshes_total", app="gfg", outcome="ok") == 1
    assert metrics("authproxy_refreshes_total", app="gfg", outcome="failed") == 1
    assert metrics("authproxy_refreshes_total", app="crm", outcome="rejected") == 1
    assert metrics("authproxy_requests_total", app="gfg", status="502") == 1
    assert metrics("authproxy_requests_total", app="crm", status="401") == 1
    assert metrics("authproxy_token_expiry_seconds", app="gfg", shop="shop1") == -1  # expired


async def test_concurrent_requests_share_one_refresh_and_one_lock_wait(serve, proxy_client, stores, clock):
    sandbox, base = await sellercenter(serve, clock)
    client = await proxy_client(settings_for({"gfg": gfg(base)}), stores.make(), clock)
    replies = await asyncio.gather(*(client.get("/gfg/shop1/v2/orders") for _ in range(20)))
    assert [reply.status for reply in replies] == [200] * 20
    metrics = await scrape(client)
    assert metrics("authproxy_refreshes_total", app="gfg", outcome="ok") == sandbox.stats.token_calls == 1
    assert metrics("authproxy_lock_wait_seconds_count") == 1
    assert metrics("authproxy_requests_total", app="gfg", status="200") == 20


# -- serve --workers 2 -----------------------------------------------------------------------


def metric_files(tmp: Path, kind: str) -> list[Path]:
    return sorted(tmp.glob(f"authproxy-metrics-*/{kind}_*.db"))


async def test_two_workers_one_scrape_counts_both(serve, shared_redis, tmp_path):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, lifetime=LIFETIME)
    base = url_of(await serve(sandbox.app()))
    config = tmp_path / "authproxy.toml"
    server = {"store_url": shared_redis.url, "key_prefix": shared_redis.prefix, "log_format": "json"}
    config.write_text(to_toml({"server": server, "apps": {"gfg": gfg(base)}}))
    port, temp = free_port(), tmp_path / "tmp"
    temp.mkdir()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    command = ["serve", "--config", str(config), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "authproxy", *command],
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)},
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    # a fresh connection per request, so that the kernel spreads them over both workers
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            sent = await _traffic_until_both_workers_served(session, url, temp, process)
            # a request is counted once its answer is written: the last one may trail its reply
            await _scrape_until(
                session, url, lambda m: m("authproxy_requests_total", app="gfg", status="200") == sent
            )
            for _ in range(6):  # each scrape lands on either worker: all must agree
                async with session.get(url + "/_authproxy/metrics") as reply:
                    metrics = Scrape(await reply.text())
                assert metrics("authproxy_requests_total", app="gfg", status="200") == sent
                assert metrics("authproxy_upstream_seconds_count", app="gfg") == sent
                assert metrics("authproxy_refreshes_total", app="gfg", outcome="ok") == 1
                assert sandbox.stats.token_calls == 1
                assert 3500 < metrics("authproxy_token_expiry_seconds", app="gfg", shop="shop1") <= LIFETIME
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert not list(temp.glob("authproxy-metrics-*")), "the supervisor removes its metrics directory"


async def _traffic_until_both_workers_served(
    session: aiohttp.ClientSession, url: str, temp: Path, process: subprocess.Popen[bytes]
) -> int:
    """Requests (at most 200) until two workers have counted some: returns how many were sent."""
    sent = 0
    while sent < 200:
        try:
            async with session.get(url + "/gfg/shop1/v2/orders") as reply:
                assert reply.status == 200, await reply.text()
                sent += 1
        except aiohttp.ClientConnectionError:
            assert process.poll() is None, "authproxy exited"
            await asyncio.sleep(0.05)  # not listening yet: polling its start-up
            continue
        if sent >= 10 and len(metric_files(temp, "counter")) >= 2:
            return sent
    raise AssertionError(f"200 requests all went to one worker: {metric_files(temp, 'counter')}")


async def _scrape_until(session: aiohttp.ClientSession, url: str, done: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        async with session.get(url + "/_authproxy/metrics") as reply:
            if done(Scrape(await reply.text())):
                return
        assert loop.time() < deadline, "the metrics never caught up with the traffic"
        await asyncio.sleep(0.05)  # polling a scrape, bounded
