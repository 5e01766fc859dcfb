"""Tests of app.http in the test process: the app factory and the turn routes in plain ASGI."""
