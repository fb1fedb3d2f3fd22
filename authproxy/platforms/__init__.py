"""Platforms: one module each behind `Platform`, chosen by the app's `platform` key.

Adding a platform = one module + one entry here + its sandbox + tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authproxy.platforms.amazon import Amazon
from authproxy.platforms.base import Platform
from authproxy.platforms.oauth2 import OAuth2
from authproxy.platforms.sellercenter import SellerCenter
from authproxy.platforms.shopee import Shopee
from authproxy.platforms.shoptet import Shoptet
from authproxy.platforms.tiktok import TikTok
from authproxy.settings import AppSettings

_CLASSES: tuple[type[Platform], ...] = (SellerCenter, OAuth2, Shopee, Amazon, TikTok, Shoptet)
#: platform name (its class's `name`, the `platform` key of an app) -> class
REGISTRY: dict[str, Callable[[Any], Platform]] = {cls.name: cls for cls in _CLASSES}
#: query parameters whose values no log line shows, whichever platform sent them
SECRET_QUERY: frozenset[str] = frozenset().union(*(cls.secret_query for cls in _CLASSES))


def build_platform(settings: AppSettings) -> Platform:
    factory = REGISTRY.get(settings.platform)
    if factory is None:
        raise NotImplementedError(f"platform {settings.platform!r} is not available")
    return factory(settings)


__all__ = ["REGISTRY", "SECRET_QUERY", "Platform", "build_platform"]
