"""`chat-backend`: one command for every process of a deployment.

    chat-backend web            the API: WEB_CONCURRENCY uvicorn processes on $PORT (+ $ADMIN_PORT)
    chat-backend worker         the arq worker
    chat-backend dev            the whole stack on one machine: Redis, the API, the worker
    chat-backend token new NAME     a fresh app token and its APP_TOKENS entry
    chat-backend token hash < FILE  the digest of a token read from stdin
    chat-backend healthcheck    the image's HEALTHCHECK: exit 0 when this container is healthy

With no command it runs PROCESS_ROLE (`web` unless set). `python -m app.cli` is the same.
"""

from __future__ import annotations

import argparse
import sys

from app import tokens
from app.cli import devstack, healthcheck, serve
from app.settings import SettingsError, load_settings


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-backend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("web", help="serve the API")
    commands.add_parser("worker", help="run the arq worker")
    commands.add_parser("dev", help="serve the whole stack on this machine")
    token = commands.add_parser("token", help="make or hash an app token")
    token.add_argument("words", nargs=argparse.REMAINDER, help="new NAME | hash")
    commands.add_parser("healthcheck", help="exit 0 when this container is healthy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev":
        return devstack.main()
    if args.command == "token":
        return tokens.main(args.words)
    if args.command == "healthcheck":
        return healthcheck.main()
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    if (args.command or settings.process_role) == "worker":
        serve.run_worker()
    else:
        serve.run_web(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
