"""The arq worker: usage metrics from committed turns, pruning of stale sessions, a heartbeat."""
