"""`python -m app.cli`: the same as `chat-backend`."""

from __future__ import annotations

import sys

from app.cli.main import main

sys.exit(main())
