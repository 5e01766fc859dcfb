"""End-to-end tests: the API and the worker as real processes, started as the Procfile does,
against a real Redis and the OpenRouter stand-in over HTTP."""
