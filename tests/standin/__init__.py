"""An offline stand-in for OpenRouter's HTTP API, served over real HTTP for the test suite.

`StandinServer` runs it on a local port, `StandinControl` scripts it per API key and reads back
what it received; see the modules for the wire format it reproduces.
"""

from __future__ import annotations

from tests.standin.app import create_standin_app
from tests.standin.control import StandinControl, StandinControlError
from tests.standin.server import StandinServer

__all__ = ["StandinControl", "StandinControlError", "StandinServer", "create_standin_app"]
