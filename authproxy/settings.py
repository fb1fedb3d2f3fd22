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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from authproxy.errors import ConfigError

MiB = 1024 * 1024
MIN_STATE_SECRET = 16
APP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    store_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "authproxy"
    workers: int = Field(1, ge=1, le=64)
    max_body: int = Field(100 * MiB, gt=0)
    max_replay_body: int = Field(10 * MiB, ge=0)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    token_timeout: float = Field(10.0, gt=0)
    lock_ttl: float = Field(30.0, gt=0)
    slot_wait: float = Field(30.0, gt=0)  # queueing for a per-token call slot, then 503
    upstream_connections: int = Field(100, ge=1)
    refresh_before: float = Field(0.1, ge=0, lt=1)
    refresh_before_max: float = Field(300.0, ge=0)
    token_cache_seconds: float = Field(30.0, ge=0)
    backoff_base: float = Field(1.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: externally reachable base URL of this proxy: turns on the OAuth callback route ("": off)
    public_url: str = ""
    #: HMAC key of the callback's `state` (required with public_url)
    state_secret: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _check_timeouts(self) -> ServerSettings:
        if self.token_timeout >= self.lock_ttl:
            raise ValueError("server.token_timeout must be shorter than server.lock_ttl")
        if self.max_replay_body > self.max_body:
            raise ValueError("server.max_replay_body must not exceed server.max_body")
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


class ClientSettings(Strict):
    key: SecretStr
    apps: list[str] = ["*"]
    shops: list[str] = ["*"]


class AppBase(Strict):
    base_url: str | None = None
    auth_url: str | None = None


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


SHOPEE_SHOP = re.compile(r"^(?:merchant:)?[1-9][0-9]{0,19}$")


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
            if not SHOPEE_SHOP.match(name):
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


PLATFORMS = ("sellercenter", "oauth2", "shopee", "tiktok", "amazon", "shoptet")

AppSettings = Annotated[
    SellerCenterApp | OAuth2App | ShopeeApp | TikTokApp | AmazonApp | ShoptetApp,
    Field(discriminator="platform"),
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTHPROXY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
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
