"""The deployment files: Dockerfile, compose.yaml, Procfile, render.yaml and the HAProxy
configuration run one set of commands, and each says what a deployment needs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from app.settings import Settings
from tests.support.cluster import compose_config, compose_file
from tests.support.processes import ROOT, process_env, procfile_command
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from tests.support.processes import WebProcess

BIN = Path(sys.executable).parent
ENTRY = ["chat-backend"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), line continuations joined, comments dropped."""
    instructions = []
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            instructions.append((name.upper(), rest.strip()))
    return instructions


def arguments(instruction: str) -> Any:
    return next(yaml.safe_load(rest) for name, rest in dockerfile() if name == instruction)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_non_root_with_health_and_stop_signal() -> None:
    instructions = dockerfile()
    stages = [rest for name, rest in instructions if name == "FROM"]
    assert len(stages) >= 2
    assert all("-slim" in stage for stage in stages), stages
    users = [rest for name, rest in instructions if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    healthcheck = next(rest for name, rest in instructions if name == "HEALTHCHECK")
    assert "chat-backend" in healthcheck and "healthcheck" in healthcheck
    # Dependencies are installed before the app's code is copied, so they cache as a layer.
    first_app_copy = instructions.index(("COPY", "app ./app"))
    assert any(
        name == "RUN" and "requirements.txt" in rest for name, rest in instructions[:first_app_copy]
    )


def test_image_compose_render_and_procfile_run_the_same_commands() -> None:
    entrypoint, default = arguments("ENTRYPOINT"), arguments("CMD")
    assert entrypoint == ENTRY
    web, worker = procfile_command("web"), procfile_command("worker")
    assert shlex.split(web) == [*entrypoint, *default] == [*ENTRY, "web"]
    assert shlex.split(worker) == [*ENTRY, "worker"]
    services = compose_file()["services"]
    assert [*entrypoint, *services["api"]["command"]] == shlex.split(web)
    assert [*entrypoint, *services["worker"]["command"]] == shlex.split(worker)
    render = yaml.safe_load((ROOT / "render.yaml").read_text())["services"]
    starts = {service["type"]: service.get("startCommand") for service in render}
    assert starts["web"] == web
    assert starts["worker"] == worker


def test_compose_runs_three_replicas_behind_a_balancer_started_by_health() -> None:
    services = compose_file()["services"]
    assert set(services) == {"redis", "api", "worker", "lb"}

    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])

    api = services["api"]
    assert api["deploy"]["replicas"] == 3
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    # The image's HEALTHCHECK is the api's: compose must not switch it off.
    assert "healthcheck" not in api
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"

    lb = services["lb"]
    assert lb["image"].startswith("haproxy:")
    assert lb["ports"] == ["8000:8000"]
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    assert {config["source"]: config["target"] for config in lb["configs"]} == {
        "haproxy": "/usr/local/etc/haproxy/haproxy.cfg",
        "haproxy-backend": "/usr/local/etc/haproxy/backend.cfg",
    }
    # Every setting the services get is one the app knows.
    given = set(compose_file()["x-app-env"]) | set(api["environment"])
    assert given <= set(Settings.__struct_encode_fields__), given - set(
        Settings.__struct_encode_fields__
    )


# `${NAME:?message}`: compose stops with the message when NAME is unset or empty.
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z_]+):\?(?P<message>[^}]+)\}$")


def test_compose_passes_the_whole_env_file_to_the_api_and_the_worker() -> None:
    services = compose_file()["services"]
    for name in ("api", "worker"):
        # The long form: without a .env the stack still starts on the shell's variables.
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
        # Over .env, compose sets only what it wires: its own Redis, the api's ports, the
        # balancer's trust and the drain its health checks need, and the secret it insists
        # on; no list of settings that leaves the others unreachable.
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert set(services["api"]["environment"]) == {
        "REDIS_URL",
        "SESSION_SECRET",
        "PORT",
        "ADMIN_PORT",
        "FORWARDED_ALLOW_IPS",
        "SHUTDOWN_DRAIN_SECONDS",
    }
    assert set(services["worker"]["environment"]) == {"REDIS_URL"}


def test_compose_refuses_to_start_without_a_session_secret_of_the_operators() -> None:
    text = (ROOT / "compose.yaml").read_text()
    secret = compose_file()["services"]["api"]["environment"]["SESSION_SECRET"]

    required = REQUIRED.fullmatch(secret)
    assert required, secret
    assert required["name"] == "SESSION_SECRET"
    assert ".env" in required["message"]
    # No default of any kind, in any service: `${SESSION_SECRET:-...}` or `-...}` would start.
    assert re.findall(r"\$\{SESSION_SECRET[^}]*\}", text) == [secret]


def test_compose_overrides_no_setting_with_a_default_of_its_own() -> None:
    # A `${NAME:-default}` would shadow the .env value with compose's (and the seed's stale
    # model id once did): every setting the file names is fixed, or required.
    text = (ROOT / "compose.yaml").read_text()
    assert not re.findall(r"\$\{[A-Z_]+:?-", text)


def test_compose_keeps_the_admin_port_off_the_host_and_out_of_the_balancer() -> None:
    services = compose_file()["services"]
    api = services["api"]
    public, admin = api["environment"]["PORT"], api["environment"]["ADMIN_PORT"]

    assert admin != public
    # Reachable from the compose network (Prometheus), published nowhere.
    assert api["expose"] == [admin]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published == [f"{public}:{public}"]
    # HAProxy sends to the public port of each replica, and to nothing else.
    backend = compose_config("haproxy-backend")
    servers = [line.split() for line in backend.splitlines() if line.strip().startswith("server")]
    assert [server[3] for server in servers] == [f"api:{public}"]
    assert f":{admin}" not in compose_config("haproxy")


def test_render_keeps_the_admin_port_off_the_public_service_port() -> None:
    render = yaml.safe_load((ROOT / "render.yaml").read_text())["services"]
    web = next(service for service in render if service["type"] == "web")
    variables = {item["key"]: item.get("value") for item in web["envVars"]}

    # Render routes public traffic to PORT (10000 unless set) and to no other port.
    assert variables["ADMIN_PORT"] not in (None, "", variables.get("PORT", "10000"))
    assert web["healthCheckPath"] == "/health"


def test_compose_balancer_has_a_slot_for_every_replica() -> None:
    backend = compose_config("haproxy-backend")
    template = next(line.split() for line in backend.splitlines() if "server-template" in line)
    slots = int(template[2])
    assert slots >= compose_file()["services"]["api"]["deploy"]["replicas"]
    assert template[3] == "api:8000"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    config, backend = tmp_path / "haproxy.cfg", tmp_path / "backend.cfg"
    config.write_text(compose_config("haproxy"))
    backend.write_text(compose_config("haproxy-backend"))
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(config), "-f", str(backend)],
        env={**process_env({}), "LB_BIND": "127.0.0.1:8000"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def healthcheck(env: dict[str, str]) -> int:
    return subprocess.run(
        [str(BIN / "chat-backend"), "healthcheck"],
        cwd=ROOT,
        env=process_env(env),
        capture_output=True,
        check=False,
        timeout=30,
    ).returncode


def test_the_image_healthcheck_asks_the_api(api: WebProcess) -> None:
    port = api.url.rsplit(":", 1)[1]

    assert healthcheck({"PORT": port}) == 0
    assert healthcheck({"PORT": str(free_port())}) == 1
    assert healthcheck({"PORT": str(free_port()), "PROCESS_ROLE": "worker"}) == 0
