"""The processes: what `chat-backend` runs (`web`, `worker`, `dev`) and the image's health check.

The top layer: it may import every other, and none imports it.
"""
