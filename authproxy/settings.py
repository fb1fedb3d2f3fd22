"""Settings: environment (`AUTHPROXY_`, nested with `__`) over a TOML file.

Secrets are written `"${ENV_VAR}"` in the file and held as `SecretStr`.
Unknown keys are rejected, naming the key and the file. Validation happens
once, at start-up; the rest of the program trusts these objects.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from authproxy.errors import ConfigError
from authproxy.keyring import Keyring, build_keyring, parse_keys
from authproxy.store_address import StoreAddress, parse_store_url

MiB = 1024 * 1024
MIN_STATE_SECRET = 16
APP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(Strict):
    """Where tokens live and how the connection to it behaves (built from [server])."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "authproxy"
    #: connections per process; past them a command waits (up to `timeout`), never fails at once
    connections: int = Field(50, ge=1)
    #: seconds a command (or the wait for a free connection) may take
    timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(2.0, gt=0)
    #: durable writes (a new token pair): attempts on connection errors, first pause (doubling)
    write_attempts: int = Field(5, ge=1)
    write_backoff: float = Field(0.05, gt=0)
    #: replicas a new token pair must reach (WAIT) before it counts as confirmed;
    #: None: 1 when the master has replicas, else 0
    wait_replicas: int | None = Field(None, ge=0)
    #: how long that WAIT may take (ms); past it the pair is kept by the process (keeper.py)
    wait_ms: int = Field(200, ge=1)

    @property
    def address(self) -> StoreAddress:
        return parse_store_url(self.url)


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    store_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "authproxy"
    store_connections: int = Field(50, ge=1)
    store_timeout: float = Field(5.0, gt=0)
    store_wait_replicas: int | Literal["auto"] = "auto"
    store_wait_ms: int = Field(200, ge=1)
    workers: int = Field(1, ge=1, le=64)
    max_body: int = Field(100 * MiB, gt=0)
    max_replay_body: int = Field(10 * MiB, ge=0)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    #: clients: a request's head must arrive within this many seconds of its first byte...
    header_timeout: float = Field(10.0, gt=0)
    #: ...its body within this many seconds of waiting for the client (in total)...
    body_timeout: float = Field(60.0, gt=0)
    #: ...and a connection with no request under way is closed after this many idle seconds
    keepalive_timeout: float = Field(75.0, gt=0)
    token_timeout: float = Field(10.0, gt=0)
    lock_ttl: float = Field(30.0, gt=0)
    slot_wait: float = Field(30.0, gt=0)  # queueing for a per-token call slot, then 503
    #: shape calls to the platforms' rate limits (false: no waiting, no learning)
    rate_limits: bool = True
    #: longest wait for a rate-limit turn (a client may ask for less: X-AuthProxy-Max-Wait)
    max_queue_wait: float = Field(10.0, ge=0)
    upstream_connections: int = Field(100, ge=1)
    refresh_before: float = Field(0.1, ge=0, lt=1)
    refresh_before_max: float = Field(300.0, ge=0)
    token_cache_seconds: float = Field(30.0, ge=0)
    backoff_base: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: the event loop `serve` runs on: "auto" = uvloop when it can be imported, else asyncio's
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    #: externally reachable base URL of this proxy: turns on the OAuth callback route ("": off)
    public_url: str = ""
    #: HMAC key of the callback's `state` (required with public_url)
    state_secret: SecretStr = SecretStr("")
    #: the keyring sealing stored tokens: "id:base64,id:base64" ("": $AUTHPROXY_KEYS)
    keys: SecretStr = Field(SecretStr(""), validate_default=True)
    #: or a file of such items (one a line); "": none
    keys_file: str = ""
    #: the key new secrets are sealed with ("": the only key, when there is one)
    active_key: str = ""

    @property
    def store(self) -> StoreSettings:
        return StoreSettings(
            url=self.store_url,
            key_prefix=self.key_prefix,
            connections=self.store_connections,
            timeout=self.store_timeout,
            wait_replicas=None if self.store_wait_replicas == "auto" else self.store_wait_replicas,
            wait_ms=self.store_wait_ms,
        )

    @field_validator("store_wait_replicas")
    @classmethod
    def _wait_replicas_not_negative(cls, count: int | str) -> int | str:
        if isinstance(count, int) and count < 0:
            raise ValueError('a number of replicas (0 or more) or "auto"')
        return count

    @field_validator("store_url")
    @classmethod
    def _store_url_parses(cls, url: str) -> str:
        try:
            parse_store_url(url)
        except ConfigError as exc:  # the message names the wrong part, never the password
            raise ValueError(str(exc).removeprefix("server.store_url: ")) from None
        return url

    @model_validator(mode="after")
    def _check_timeouts(self) -> ServerSettings:
        if self.token_timeout >= self.lock_ttl:
            raise ValueError("server.token_timeout must be shorter than server.lock_ttl")
        if self.max_replay_body > self.max_body:
            raise ValueError("server.max_replay_body must not exceed server.max_body")
        return self

    @field_validator("keys")
    @classmethod
    def _keys_from_environment(cls, keys: SecretStr) -> SecretStr:
        return keys if keys.get_secret_value() else SecretStr(os.environ.get("AUTHPROXY_KEYS", ""))

    def key_text(self) -> tuple[str, str]:
        """The keyring's items and where they come from (keys_file is read here)."""
        if not self.keys_file:
            return self.keys.get_secret_value(), "server.keys"
        source = f"server.keys_file ({self.keys_file})"
        try:
            return Path(self.keys_file).read_text(encoding="utf-8"), source
        except OSError as exc:
            raise ValueError(f"cannot read {source}: {exc.strerror}") from None

    def keyring(self) -> Keyring | None:
        """The keyring `keys` (default: $AUTHPROXY_KEYS) or `keys_file` holds; None: no keys.
        Built once at start-up (runtime.py), checked when the settings are read."""
        try:
            text, source = self.key_text()
        except ValueError as exc:  # the file went away since the settings were read
            raise ConfigError(str(exc)) from None
        return build_keyring(parse_keys(text, source), self.active_key, source)

    @model_validator(mode="after")
    def _check_keys(self) -> ServerSettings:
        if self.keys_file and self.keys.get_secret_value():
            raise ValueError("give server.keys (or AUTHPROXY_KEYS) or server.keys_file, not both")
        try:
            self.keyring()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _check_callback(self) -> ServerSettings:
        if not self.public_url:
            return self
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", self.public_url):
            raise ValueError("server.public_url must be an http(s) URL without query or fragment")
        if len(self.state_secret.get_secret_value()) < MIN_STATE_SECRET:
            raise ValueError(
                f"server.public_url needs server.state_secret (at least {MIN_STATE_SECRET} characters)"
            )
        return self


class EventSettings(Strict):
    """`[events]`: shop events go to a Redis stream; a consumer group POSTs them here."""

    webhook_url: str = ""  # "": no webhook (events still reach the log, metrics and the stream)
    webhook_secret: SecretStr = SecretStr("")  # HMAC-SHA256 key of X-AuthProxy-Signature
    refresh_failing_after: int = Field(3, ge=1)  # consecutive failed refreshes -> shop.refresh_failing
    retry_for: float = Field(86400.0, gt=0)  # an event not delivered by then is dropped (logged, counted)
    retry_base: float = Field(1.0, gt=0)  # backoff between attempts: base, 2*base, ... (jittered)
    retry_max: float = Field(600.0, gt=0)
    timeout: float = Field(10.0, gt=0)  # one webhook attempt
    poll: float = Field(2.0, gt=0)  # seconds between reads of the stream while idle (jittered)
    claim_after: float = Field(60.0, gt=0)  # a silent replica's unacknowledged events go to another
    max_events: int = Field(100_000, ge=1000)  # stream length kept (approximate): tail/replay reach

    @model_validator(mode="after")
    def _check_webhook(self) -> EventSettings:
        if self.retry_max < self.retry_base:
            raise ValueError("events.retry_max must not be below events.retry_base")
        if self.claim_after <= 2 * self.timeout:
            raise ValueError("events.claim_after must exceed twice events.timeout")
        if not self.webhook_url:
            return self
        if not re.match(r"^https?://[^/?#\s]+([/?][^#\s]*)?$", self.webhook_url):
            raise ValueError("events.webhook_url must be an http(s) URL")
        if len(self.webhook_secret.get_secret_value()) < MIN_STATE_SECRET:
            raise ValueError(
                f"events.webhook_url needs events.webhook_secret (at least {MIN_STATE_SECRET} characters)"
            )
        return self


class KeepAliveSettings(Strict):
    """`[keepalive]`: refresh idle shops before their refresh credential dies; warn before
    authorisations end. Replicas share the work through a due index in Redis."""

    enabled: bool = True
    tick: float = Field(60.0, gt=0)  # seconds between claims (jittered)
    concurrency: int = Field(4, ge=1, le=1000)  # keep-alive refreshes in flight per process
    max_per_minute: int = Field(60, ge=1)  # per app, across replicas: shops claimed per minute
    lease: float = Field(120.0, gt=0)  # a claimed shop is due again after this unless handled
    census_every: float = Field(300.0, gt=0)  # seconds between counts of shops by status (gauge)
    #: warn (shop.authorization_expiring) this many seconds before an authorisation ends
    warn_before: list[Annotated[float, Field(gt=0)]] = [2592000.0, 604800.0, 86400.0]


class ClientSettings(Strict):
    key: SecretStr
    apps: list[str] = ["*"]
    shops: list[str] = ["*"]


LIMIT_MATCH = re.compile(r"^(?:(?P<method>[A-Z]+|\*) +)?(?P<path>/\S*|\*)$")


class LimitSettings(Strict):
    """`[[apps.X.limits]]`: a bucket for the calls `match` selects ("GET /orders/*", "*")."""

    match: str
    rate: float = Field(gt=0)  # calls per second
    burst: int | None = Field(None, ge=1)  # default: one second's worth (at least 1)
    scope: Literal["shop", "app"] = "shop"

    @model_validator(mode="after")
    def _check_match(self) -> LimitSettings:
        if not LIMIT_MATCH.match(self.match):
            raise ValueError('match must be "*", a path glob "/a/*" or a method and one "GET /a/*"')
        return self


class AppBase(Strict):
    base_url: str | None = None
    auth_url: str | None = None
    limits: list[LimitSettings] = []
    #: seconds an unused refresh credential lives (None: the platform's; 0: never dies idle)
    refresh_idle_lifetime: float | None = Field(None, ge=0)
    #: keep-alive refreshes a shop idle for this fraction of that (jittered down by up to 20 %)
    keepalive_fraction: float = Field(0.25, gt=0, le=0.9)


# ---- Global Fashion Group Seller Center -----------------------------------------------


class SellerCenterShop(Strict):
    client_id: str | None = None
    client_secret: SecretStr | None = None


class SellerCenterApp(AppBase):
    platform: Literal["sellercenter"]
    base_url: str
    client_id: str | None = None
    client_secret: SecretStr | None = None
    shops: dict[str, SellerCenterShop] = {}


# ---- generic OAuth2 ----------------------------------------------------------------------


class OAuth2Shop(Strict):
    refresh_token: SecretStr | None = None


class OAuth2App(AppBase):
    platform: Literal["oauth2"]
    base_url: str
    token_url: str
    grant_type: Literal["client_credentials", "refresh_token"] = "client_credentials"
    client_id: str
    client_secret: SecretStr | None = None
    client_auth: Literal["basic", "body"] = "basic"
    scope: str | None = None
    header: str = "Authorization"
    header_format: str = "Bearer {token}"
    invalid_token_statuses: list[int] = [401]
    invalid_token_field: str | None = None
    invalid_token_values: list[str] = []
    shops: dict[str, OAuth2Shop] = {}

    @model_validator(mode="after")
    def _check_format(self) -> OAuth2App:
        if "{token}" not in self.header_format:
            raise ValueError("header_format must contain {token}")
        return self


# ---- marketplaces (issue 3 fills in their modules) --------------------------------------


#: a Shopee shop segment: shop_id, merchant:<merchant_id>, or main:<main_account_id> (codes only)
SHOPEE_ACCOUNT = re.compile(r"^(?:(merchant|main):)?([1-9][0-9]{0,19})$")


class ShopeeShop(Strict):
    #: a first refresh token (single use: once the store holds a rotated one, this is dead)
    refresh_token: SecretStr | None = None


class ShopeeApp(AppBase):
    platform: Literal["shopee"]
    partner_id: int = Field(gt=0)
    partner_key: SecretStr
    region: Literal["global", "china", "brazil", "sandbox", "sandbox_china"] = "global"
    redirect_url: str | None = None  # where the seller lands after consent (authorize-url)
    shops: dict[str, ShopeeShop] = {}

    @model_validator(mode="after")
    def _check_shops(self) -> ShopeeApp:
        for name in self.shops:
            match = SHOPEE_ACCOUNT.fullmatch(name)
            if match is None or match.group(1) == "main":
                raise ValueError(f"shop {name!r}: a Shopee shop is a shop_id or merchant:<merchant_id>")
        return self


class TikTokShop(Strict):
    shop_cipher: str | None = None
    #: seed for a shop authorized elsewhere; a stored (rotated) refresh token wins
    refresh_token: SecretStr | None = None


class TikTokApp(AppBase):
    platform: Literal["tiktok"]
    app_key: str
    app_secret: SecretStr
    service_id: str | None = None
    #: consent page; default ROW, US: https://services.tiktokshops.us/open/authorize
    authorize_url: str | None = None
    shops: dict[str, TikTokShop] = {}


class AmazonShop(Strict):
    refresh_token: SecretStr | None = None


class AmazonApp(AppBase):
    platform: Literal["amazon"]
    client_id: str
    client_secret: SecretStr
    region: Literal["na", "eu", "fe"] = "na"
    sandbox: bool = False
    application_id: str | None = None  # amzn1.sp.solution.…: for the seller consent link
    seller_central_url: str | None = None  # consent host; default per region
    draft: bool = False  # app not yet published: consent links carry version=beta
    user_agent: str = "authproxy/0.1 (Language=Python)"  # sent when the client sends none
    #: public apps: sellers re-authorise every 365 days, counted from the code exchange (0: never)
    reauthorize_every: float = Field(365 * 86400.0, ge=0)
    shops: dict[str, AmazonShop] = {}


class ShoptetShop(Strict):
    oauth_access_token: SecretStr | None = None


class ShoptetApp(AppBase):
    platform: Literal["shoptet"]
    base_url: str = "https://api.myshoptet.com"
    auth_url: str  # the partner e-shop, e.g. https://12345.myshoptet.com
    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_uri: str | None = None  # the add-on's install URL (code exchange's redirect_uri)
    shops: dict[str, ShoptetShop] = {}


AppSettings = Annotated[
    SellerCenterApp | OAuth2App | ShopeeApp | TikTokApp | AmazonApp | ShoptetApp,
    Field(discriminator="platform"),
]
#: every platform's name, as the `platform` key of an app names it
PLATFORMS = tuple(
    get_args(model.model_fields["platform"].annotation)[0] for model in get_args(get_args(AppSettings)[0])
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTHPROXY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    keepalive: KeepAliveSettings = Field(default_factory=KeepAliveSettings)
    apps: dict[Annotated[str, Field(pattern=APP_NAME)], AppSettings] = {}
    clients: dict[str, ClientSettings] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML document arrives as init arguments; the environment wins over it.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.keepalive.lease <= self.server.token_timeout:
            raise ValueError("keepalive.lease must exceed server.token_timeout")
        return self


def config_path(explicit: str | None) -> Path | None:
    chosen = explicit or os.environ.get("AUTHPROXY_CONFIG")
    return Path(chosen) if chosen else None


def load_settings(path: Path | None) -> Settings:
    """Read, expand and validate the configuration, or raise ConfigError."""
    document: dict[str, Any] = {}
    source = str(path) if path else "the environment"
    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        document = _expand(document, source, ())
    try:
        return Settings(**document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _expand(node: Any, source: str, where: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {key: _expand(value, source, (*where, str(key))) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, source, (*where, str(i))) for i, value in enumerate(node)]
    if isinstance(node, str):
        return ENV_REF.sub(lambda match: _env(match.group(1), source, where), node)
    return node


def _env(name: str, source: str, where: tuple[str, ...]) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"{source}: {'.'.join(where)} refers to ${{{name}}}, which is not set")
    return value


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if len(loc) > 2 and loc[0] == "apps" and loc[2] in PLATFORMS:
            del loc[2]  # the discriminator's tag is not a key the user wrote
        where = ".".join(loc)
        if error["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{where}'")
        elif error["type"] == "union_tag_invalid":
            lines.append(f"{source}: {where}: unknown platform ({error['msg']})")
        else:
            lines.append(f"{source}: {where}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
