"""Unit tests of app.turns: the parts of a turn that need no server."""
