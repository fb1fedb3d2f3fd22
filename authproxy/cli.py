"""The `authproxy` command line: serve, check-config, tokens (and more, see --help)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from authproxy.errors import ConfigError, ProxyError
from authproxy.settings import Settings, config_path, load_settings


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before or after any (sub)command: `authproxy tokens list --config F`
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration (default: $AUTHPROXY_CONFIG)",
    )
    parser = argparse.ArgumentParser(
        prog="authproxy",
        parents=[common],
        description="Reverse proxy that injects marketplace authentication.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy", parents=[common])
    serve.add_argument("--host", help="address to listen on (default: server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default 1)")

    commands.add_parser("check-config", help="validate the configuration and exit", parents=[common])

    demo = commands.add_parser(
        "demo", help="sandboxes of every platform + the proxy, no accounts", parents=[common]
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (0: any free port)")

    tokens = commands.add_parser("tokens", help="inspect and manage stored tokens", parents=[common])
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every stored shop token, secrets masked", parents=[common])
    for name, text in (("show", "one shop's token, secrets masked"), ("delete", "forget a token")):
        action = actions.add_parser(name, help=text, parents=[common])
        action.add_argument("app")
        action.add_argument("shop")
    setter = actions.add_parser(
        "set", help="store a token obtained elsewhere ('-' reads stdin)", parents=[common]
    )
    setter.add_argument("app")
    setter.add_argument("shop")
    setter.add_argument("--access-token")
    setter.add_argument("--refresh-token")
    setter.add_argument("--expires-in", type=float, help="seconds the access token stays valid")
    setter.add_argument("--refresh-expires-in", type=float, help="seconds the refresh token lives")
    setter.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="non-secret data kept with the token (e.g. shop_cipher=...)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"authproxy: {exc}", file=sys.stderr)
        return 2
    except ProxyError as exc:
        print(f"authproxy: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "check-config": _check_config,
        "tokens": _tokens,
        "demo": _demo,
    }
    return handlers[args.command](args)


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(config_path(getattr(args, "config", None)))


def _check_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = config_path(getattr(args, "config", None))
    print(f"{path or 'environment'}: OK, {len(settings.apps)} app(s)")
    for name, app in settings.apps.items():
        print(f"  {name}: {app.platform}, {len(app.shops)} configured shop(s)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from authproxy.serve import serve

    settings = settings_from(args)
    server = settings.server.model_copy(
        update={
            key: value
            for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
            if value is not None
        }
    )
    settings = settings.model_copy(update={"server": server})
    return serve(settings)


def _demo(args: argparse.Namespace) -> int:
    from authproxy.demo import demo

    return demo(args.host, args.port)


def _tokens(args: argparse.Namespace) -> int:
    from authproxy import admin

    settings = settings_from(args)
    action = getattr(admin, f"{args.action}_command")
    return int(asyncio.run(action(settings, args)))


def read_secret(value: str | None) -> str | None:
    """A secret given on the command line, or read from stdin when it is '-'."""
    if value == "-":
        return sys.stdin.readline().strip()
    return value
