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

REGISTRY: dict[str, Callable[[Any], Platform]] = {
    "sellercenter": SellerCenter,
    "oauth2": OAuth2,
    "shopee": Shopee,
    "amazon": Amazon,
    "tiktok": TikTok,
    "shoptet": Shoptet,
}


def build_platform(settings: AppSettings) -> Platform:
    factory = REGISTRY.get(settings.platform)
    if factory is None:
        raise NotImplementedError(f"platform {settings.platform!r} is not available")
    return factory(settings)


__all__ = ["REGISTRY", "Platform", "build_platform"]
