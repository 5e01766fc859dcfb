"""`python -m tests.standin`: serve the stand-in in the foreground (benchmarks, manual use)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from tests.standin.app import create_standin_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--models", type=Path, default=None, help="catalogue JSON to serve")
    parser.add_argument(
        "--max-records",
        type=int,
        default=10_000,
        help="request records kept for /_standin/requests (oldest dropped first)",
    )
    args = parser.parse_args()
    app = create_standin_app(args.models, max_records=args.max_records)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
