"""Optional client keys (`[clients.<name>]`): who may use which apps and shops."""

from __future__ import annotations

import fnmatch
import hmac

from authproxy.errors import UnauthorizedClient
from authproxy.settings import ClientSettings


class ClientGate:
    """Open when no client is configured; otherwise every request needs a key."""

    def __init__(self, clients: dict[str, ClientSettings]) -> None:
        self.clients = [(client.key.get_secret_value().encode(), client) for client in clients.values()]

    def check(self, key: str | None, app: str, shop: str) -> None:
        if not self.clients:
            return
        if not key:
            raise UnauthorizedClient("this proxy requires an X-AuthProxy-Key header")
        offered = key.encode()
        # compare with every key (constant time each) so timing tells nothing
        matches = [client for secret, client in self.clients if hmac.compare_digest(secret, offered)]
        if not matches:
            raise UnauthorizedClient("the X-AuthProxy-Key is not valid")
        if not any(_allowed(c.apps, app) and _allowed(c.shops, shop) for c in matches):
            raise UnauthorizedClient(f"this client key may not use {app}/{shop}")


def _allowed(patterns: list[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
