"""Tests of app.http in the test process: the app factory and the plain-ASGI /chat."""
