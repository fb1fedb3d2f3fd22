"""The `authproxy` command line: serve, check-config, tokens (and more, see --help)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from authproxy.errors import CannotListen, ConfigError, ProxyError
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
    listing = actions.add_parser("list", help="every stored shop token, secrets masked", parents=[common])
    listing.add_argument("--json", action="store_true", help="machine-readable (still masked)")
    listing.add_argument(
        "--expiring-within",
        metavar="D",
        help="only shops whose access ends within D (7d, 12h, 1h30m), with why: the "
        "authorization ends, the refresh token dies unused, or needs_reauthorization",
    )
    for name, text in (("show", "one shop's token, secrets masked"), ("delete", "forget a token")):
        action = actions.add_parser(name, help=text, parents=[common])
        action.add_argument("app")
        action.add_argument("shop")
        if name == "show":
            action.add_argument("--json", action="store_true", help="machine-readable (still masked)")
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
        "--authorized-until",
        metavar="T",
        help="when the seller's authorization ends (ISO time, or from now: 365d); warned before",
    )
    setter.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="non-secret data kept with the token (e.g. shop_cipher=...)",
    )
    _add_authorize(commands, common)
    limits = commands.add_parser("limits", help="rate limits: rules and learned buckets", parents=[common])
    what = limits.add_subparsers(dest="action", required=True, metavar="ACTION")
    shown = what.add_parser("show", help="an app's limits and its buckets in the store", parents=[common])
    shown.add_argument("app")
    shown.add_argument("shop", nargs="?", help="only this shop's buckets")
    _add_events(commands, common)
    _add_keys(commands, common)
    return parser


def _add_keys(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    keys = commands.add_parser("keys", help="the keyring that encrypts stored tokens", parents=[common])
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="print a new key line (id:base64)", parents=[common])
    generate.add_argument("--id", help="the key's id (default: k<UTC time>)")
    rotate = actions.add_parser(
        "rotate", help="re-encrypt every stored record with server.active_key, online", parents=[common]
    )
    rotate.add_argument("--dry-run", action="store_true", help="count the records per key, change nothing")
    rotate.add_argument("--rate", type=float, default=200.0, help="records re-encrypted per second at most")
    rotate.add_argument("--batch", type=int, default=500, help="records read per SCAN step")


def _add_authorize(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    link = commands.add_parser(
        "authorize-url", help="print the link a seller opens to authorize an app", parents=[common]
    )
    link.add_argument("app")
    link.add_argument("--redirect", metavar="URL", help="where the platform sends the seller back")
    link.add_argument("--state", help="the state to carry (default: random, or signed for the callback)")
    link.add_argument("--shop", help="the shop the OAuth callback stores the token under")
    code = commands.add_parser(
        "authorize", help="exchange an authorization code and store the token(s)", parents=[common]
    )
    code.add_argument("app")
    code.add_argument("shop")
    code.add_argument("--code", required=True, help="the code from the redirect ('-' reads stdin)")
    code.add_argument("--redirect", metavar="URL", help="the redirect URL the consent link used")


def _add_events(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    events = commands.add_parser("events", help="follow and re-deliver shop events", parents=[common])
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    since = "ISO 8601 time (UTC unless stated) or a duration back from now: 90s, 15m, 2h, 7d, 1h30m"
    tail = actions.add_parser("tail", help="print events as they come, one line each", parents=[common])
    tail.add_argument("--json", action="store_true", help="each event as the webhook's JSON body")
    tail.add_argument("--since", metavar="T", help=f"start with the retained events since T: {since}")
    tail.add_argument("--count", "-n", type=int, metavar="N", help="stop after N events")
    replay = actions.add_parser(
        "replay", help="re-deliver the retained events since T to the webhook", parents=[common]
    )
    replay.add_argument("--since", metavar="T", required=True, help=since)


# Options whose value is opaque and may begin with '-' (an OAuth code, e.g. Shoptet's):
# argparse would read `--code -x1` as two options.
OPAQUE_VALUE_OPTIONS = ("--code",)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line; `--code -x1` is read as `--code=-x1`."""
    glued: list[str] = []
    words = iter(argv)
    for word in words:
        value = next(words, None) if word in OPAQUE_VALUE_OPTIONS else None
        glued.append(word if value is None else f"{word}={value}")
    return build_parser().parse_args(glued)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"authproxy: {exc}", file=sys.stderr)
        return 2
    except CannotListen as exc:
        print(f"authproxy: {exc}", file=sys.stderr)
        return 1
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
        "authorize-url": _authorize_url,
        "authorize": _authorize,
        "limits": _limits,
        "events": _events,
        "keys": _keys,
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
    from authproxy import admin, listing

    settings = settings_from(args)
    action = getattr(listing if args.action in ("list", "show") else admin, f"{args.action}_command")
    return int(asyncio.run(action(settings, args)))


def _authorize_url(args: argparse.Namespace) -> int:
    from authproxy import admin

    return admin.authorize_url_command(settings_from(args), args)


def _authorize(args: argparse.Namespace) -> int:
    from authproxy import admin

    return int(asyncio.run(admin.authorize_command(settings_from(args), args)))


def _limits(args: argparse.Namespace) -> int:
    from authproxy.limits.show import show_command

    return int(asyncio.run(show_command(settings_from(args), args)))


def _events(args: argparse.Namespace) -> int:
    from authproxy.events.commands import events_command

    return events_command(settings_from(args), args)


def _keys(args: argparse.Namespace) -> int:
    from authproxy import keys_command

    return keys_command.run(args, lambda: settings_from(args))
