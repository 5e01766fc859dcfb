"""The worker's Lua scripts, read from `workers/lua`."""

from __future__ import annotations

from importlib.resources import files


def load_script(name: str) -> str:
    return files("workers").joinpath("lua", name).read_text(encoding="utf-8")
