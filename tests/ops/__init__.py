"""Unit tests of app.ops: logging, tallies, deadlines."""
