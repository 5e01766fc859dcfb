"""Real servers and processes for the tests: Redis, the API and the worker."""
