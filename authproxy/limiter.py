"""Caps concurrent upstream calls per token (Shoptet allows 3 per token).

Requests over the cap wait their turn instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from authproxy.models import TokenKey


class Limiter:
    """Per-process semaphores, one per (app, shop) that has a cap."""

    def __init__(self) -> None:
        self._semaphores: dict[TokenKey, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, key: TokenKey, limit: int | None) -> AsyncIterator[None]:
        if limit is None:
            yield
            return
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(limit))
        async with semaphore:
            yield
