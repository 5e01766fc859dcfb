"""Tests of app.store against a real Redis, and the contracts it keeps with redis-py."""
