"""Large bodies stream through with bounded memory (peak RSS of the proxy process)."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from tests.procs import SharedRedis, memory_of, proxy_processes, sandbox_process

GiB, MiB = 1024**3, 1024**2
RSS_BOUND = 150 * MiB  # a buffered body alone would be 200 MiB or 1 GiB


def peak_rss(pid: int) -> int:
    return memory_of(pid, "VmHWM")


@pytest.fixture
async def upstream_process():
    async with sandbox_process("sellercenter") as url:
        yield url


@pytest.mark.slow
async def test_1_gib_download_and_200_mib_upload_in_bounded_memory(upstream_process, tmp_path):
    apps = {
        "gfg": {
            "platform": "sellercenter",
            "base_url": upstream_process,
            "client_id": "app-1",
            "client_secret": "secret-1",
        }
    }
    server = {"max_body": 256 * MiB}  # the default cap is 100 MiB
    async with proxy_processes(apps, SharedRedis("memory://"), tmp_path, count=1, server=server) as (proxy,):
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            received = 0
            async with session.get(f"{proxy.url}/gfg/s1/v2/stream?bytes={GiB}") as reply:
                assert reply.status == 200
                assert reply.headers["Content-Length"] == str(GiB)
                async for chunk in reply.content.iter_chunked(1 * MiB):
                    received += len(chunk)
            assert received == GiB
            after_download = peak_rss(proxy.process.pid)

            digest = hashlib.sha256()

            async def upload():
                block = b"u" * MiB
                for _ in range(200):
                    digest.update(block)
                    yield block

            async with session.post(f"{proxy.url}/gfg/s1/v2/upload", data=upload()) as reply:
                echoed = await reply.json()
            assert reply.status == 200
            assert echoed["body_bytes"] == 200 * MiB
            assert echoed["body_sha256"] == digest.hexdigest()
            after_upload = peak_rss(proxy.process.pid)
    print(
        f"\npeak RSS of the proxy: {after_download / MiB:.1f} MiB after 1 GiB down, "
        f"{after_upload / MiB:.1f} MiB after 200 MiB up"
    )
    assert after_download < RSS_BOUND
    assert after_upload < RSS_BOUND
