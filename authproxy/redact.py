"""Query-string redaction for anything a person may read: logs, reprs, errors."""

from __future__ import annotations

from urllib.parse import unquote_plus

REDACTED = "***"
#: query parameters whose values never reach a log line or a repr
SECRET_PARAMS = frozenset(
    {"access_token", "sign", "refresh_token", "app_secret", "client_secret", "code", "auth_code"}
)


def redact_query(query: str, secrets: frozenset[str] = SECRET_PARAMS) -> str:
    if not query:
        return query
    out = []
    for segment in query.split("&"):
        key = segment.partition("=")[0]
        out.append(f"{key}={REDACTED}" if unquote_plus(key).lower() in secrets else segment)
    return "&".join(out)


def redact_url(url: str) -> str:
    base, mark, query = url.partition("?")
    return base + mark + redact_query(query)
