"""Unit tests of app.ops: logging and tallies."""
