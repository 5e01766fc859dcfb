"""GET /metrics: Prometheus counters added up over the processes of a replica."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from app.ops.tally import FLUSH_SECONDS
from tests.conftest import bearer
from tests.support.cluster import wait_for
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

MODEL = "openai/gpt-4o"
TURNS = 8
TOKEN = "metrics-token-" + "m" * 20


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_over_every_process_of_a_replica(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    standin.control.script(
        api_key, *([{}] * TURNS), {"content": "streamed answer"}, {"status": 429, "message": "slow"}
    )
    web = start_api(WEB_CONCURRENCY="2")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        for _ in range(TURNS):
            response = http.post(
                "/chat", json={"message": "hi", "model": MODEL}, headers=bearer(api_key)
            )
            assert response.status_code == 200
        streamed = http.post(
            "/chat", json={"message": "hi", "model": MODEL, "stream": True}, headers=bearer(api_key)
        )
        assert "done" in streamed.text
        limited = http.post(
            "/chat", json={"message": "hi", "model": MODEL}, headers=bearer(api_key)
        )
        assert limited.status_code == 429
        assert http.get("/sessions/no-such-session", headers=bearer(api_key)).status_code == 404
        # Scraped a few times: each scrape may land on either process, and each sees all,
        # another process's counts at most a flush late.
        time.sleep(FLUSH_SECONDS + 0.3)
        scrapes = [http.get("/metrics") for _ in range(4)]

    for scrape in scrapes:
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        found = samples(scrape.text)
        assert value(found, "chat_http_requests_total", route="/chat", status="200") == TURNS + 1
        assert value(found, "chat_http_requests_total", route="/chat", status="429") == 1
        assert (
            value(found, "chat_http_requests_total", route="/sessions/{session_id}", status="404")
            == 1
        )
        assert value(found, "chat_turns_total", model=MODEL) == TURNS + 1
        assert value(found, "chat_tokens_total", model=MODEL, kind="completion") > 0
        assert value(found, "chat_cost_usd_total", model=MODEL) > 0
        assert value(found, "chat_upstream_errors_total", status="429") == 1
        assert value(found, "chat_upstream_duration_seconds_count", kind="complete") == TURNS
        assert value(found, "chat_upstream_duration_seconds_count", kind="stream_open") == 1
        assert value(found, "chat_stream_first_token_seconds_count") == 1
        assert value(found, "chat_http_request_duration_seconds_count", route="/chat") == TURNS + 2
        assert value(found, "chat_streams_in_flight") == 0
        # The scrape itself is the one request in flight.
        assert value(found, "chat_http_requests_in_flight") == 1


def test_labels_are_catalogue_models_and_our_statuses_or_other(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    unlisted = "vendor/unlisted-variant"
    standin.control.script(api_key, {}, {"model": unlisted}, {"status": 418})
    web = start_api()
    with httpx.Client(base_url=web.url, timeout=10) as http:

        def turn(model: str) -> int:
            body = {"message": "hi", "model": model}
            return http.post("/chat", json=body, headers=bearer(api_key)).status_code

        assert [turn(MODEL), turn(MODEL), turn(MODEL), turn("vendor/made-up")] == [
            200,
            200,
            502,
            400,
        ]
        time.sleep(FLUSH_SECONDS + 0.3)
        text = http.get("/metrics").text
    found = samples(text)

    def labels(name: str, label: str) -> dict[str, float]:
        return {dict(pairs)[label]: n for (sample, pairs), n in found.items() if sample == name}

    # OpenRouter's answer names the model: one the catalogue lacks is `other`, as is a status
    # that is none of ours.
    assert labels("chat_turns_total", "model") == {MODEL: 1, "other": 1}
    assert labels("chat_upstream_errors_total", "status") == {"other": 1, "400": 1}
    assert unlisted not in text


def test_redis_errors_are_counted(start_api: Callable[..., WebProcess], api_key: str) -> None:
    web = start_api(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_TIMEOUT_SECONDS="0.2")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        assert http.get("/sessions", headers=bearer(api_key)).status_code == 503
        found = samples(http.get("/metrics").text)

    assert value(found, "chat_redis_errors_total") == 1
    assert value(found, "chat_http_requests_total", route="/sessions", status="503") == 1


def test_metrics_token_guards_the_route(start_api: Callable[..., WebProcess]) -> None:
    web = start_api(METRICS_TOKEN=TOKEN)
    with httpx.Client(base_url=web.url, timeout=10) as http:
        missing = http.get("/metrics")
        wrong = http.get("/metrics", headers=bearer("x" * len(TOKEN)))
        right = http.get("/metrics", headers=bearer(TOKEN))

    assert missing.status_code == wrong.status_code == 401
    assert "METRICS_TOKEN" in missing.json()["error"]["message"]
    assert right.status_code == 200
    assert "chat_http_requests_total" in right.text


def test_a_restarted_replica_starts_counting_afresh(
    start_api: Callable[..., WebProcess], tmp_path: Path
) -> None:
    web = start_api(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    with httpx.Client(base_url=web.url, timeout=10) as http:
        for _ in range(3):
            http.get("/health")
    web.stop()
    web.start()
    with httpx.Client(base_url=web.url, timeout=10) as http:
        found = samples(http.get("/metrics").text)

    # The one /health of the second start's readiness wait; nothing of the first run.
    assert value(found, "chat_http_requests_total", route="/health", status="200") == 1


def server_processes(pid: int) -> set[int]:
    """uvicorn's processes under its supervisor (not multiprocessing's resource tracker)."""
    found = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        # A child may end between the two reads (one being killed, or restarted).
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
    return found


def test_requests_in_flight_of_a_crashed_process_stop_counting(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"delay": 30})
    web = start_api(WEB_CONCURRENCY="2")
    before = server_processes(web.pid)

    def hung_turn() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{web.url}/chat", json={"message": "hi"}, headers=bearer(api_key), timeout=60
            )

    thread = threading.Thread(target=hung_turn)
    thread.start()

    def in_flight() -> float:
        return value(samples(httpx.get(f"{web.url}/metrics").text), "chat_http_requests_in_flight")

    wait_for(lambda: in_flight() == 2, 30, "the hung turn to be counted")
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=60)
    wait_for(lambda: bool(server_processes(web.pid) - before), 30, "new uvicorn processes")
    wait_for(lambda: in_flight() == 1, 30, "only the scrape to be in flight")


def chat_exemplars(text: str) -> dict[str, tuple[str, float]]:
    """The exemplars on /chat's latency buckets: le -> (request id, seconds)."""
    found = {}
    for family in openmetrics_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            labels = sample.labels
            if sample.exemplar is not None and labels.get("route") == "/chat":
                assert sample.name == "chat_http_request_duration_seconds_bucket"
                found[labels["le"]] = (sample.exemplar.labels["request_id"], sample.exemplar.value)
    return found


def test_openmetrics_scrapes_carry_request_ids_as_exemplars_over_every_process(
    start_api: Callable[..., WebProcess], api_key: str
) -> None:
    web = start_api(WEB_CONCURRENCY="2")
    sent = {f"exemplar-{n}-{os.urandom(4).hex()}" for n in range(6)}
    openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
    with httpx.Client(base_url=web.url, timeout=10) as http:
        for rid in sent:
            answer = http.post(
                "/chat", json={"message": "hi"}, headers=bearer(api_key) | {"X-Request-ID": rid}
            )
            assert answer.status_code == 200
        # Each process writes its exemplars at most once a second, on its next request.
        scrapes: list[httpx.Response] = []

        def scraped_one() -> bool:
            scrapes.append(http.get("/metrics", headers=openmetrics))
            return bool(chat_exemplars(scrapes[-1].text))

        wait_for(scraped_one, 15, "an exemplar of /chat")
        # Whichever process serves the scrape, it sees the other's exemplars too.
        later = [http.get("/metrics", headers=openmetrics) for _ in range(6)]
        plain = http.get("/metrics")

    for scrape in [scrapes[-1], *later]:
        assert scrape.headers["content-type"].startswith("application/openmetrics-text")
        exemplars = chat_exemplars(scrape.text)
        assert exemplars
        for le, (rid, seconds) in exemplars.items():
            assert rid in sent
            assert seconds <= float(le)
    assert "# {" not in plain.text  # the classic text format has no exemplars
