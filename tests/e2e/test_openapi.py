"""The API's documentation: Swagger UI, ReDoc and an OpenAPI 3.1 document describing it all."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.processes import WebProcess

ENDPOINTS = [
    ("post", "/chat"),
    ("get", "/models"),
    ("get", "/sessions"),
    ("get", "/sessions/{session_id}"),
    ("delete", "/sessions/{session_id}"),
    ("get", "/health"),
    ("post", "/v1/chat/completions"),
    ("get", "/v1/models"),
]
AUTHENTICATED = [e for e in ENDPOINTS if e[1].startswith(("/chat", "/sessions", "/v1/chat"))]
CHAT_ERRORS = ["400", "401", "404", "413", "429", "502", "503", "504"]
SESSION_ERRORS = {
    ("get", "/sessions"): ["400", "401", "429", "503"],
    ("get", "/sessions/{session_id}"): ["400", "401", "404", "429", "503"],
    ("delete", "/sessions/{session_id}"): ["400", "401", "404", "429", "503"],
}
ERROR_FIELDS = {"status", "type", "message", "request_id"}


@pytest.fixture(scope="module")
def document(api: WebProcess) -> dict[str, Any]:
    response = httpx.get(f"{api.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    body: dict[str, Any] = response.json()
    return body


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` to the schema it names."""
    while "$ref" in schema:
        ref: str = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][path][method]
    return op


def json_schema_of(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    return resolve(document, response["content"]["application/json"]["schema"])


def assert_error_body(document: dict[str, Any], response: dict[str, Any]) -> None:
    body = json_schema_of(document, response)
    assert body["type"] == "object"
    assert "error" in body["required"]
    detail = resolve(document, body["properties"]["error"])
    assert set(detail["properties"]) >= ERROR_FIELDS
    assert set(detail["required"]) >= ERROR_FIELDS
    assert detail["properties"]["status"]["type"] == "integer"
    for name in ("type", "message", "request_id"):
        assert detail["properties"][name]["type"] == "string"


def chat_request(document: dict[str, Any]) -> dict[str, Any]:
    body = operation(document, "post", "/chat")["requestBody"]
    assert body["required"] is True
    return resolve(document, body["content"]["application/json"]["schema"])


# ---- the pages -------------------------------------------------------------------------------


def test_docs_serves_swagger_ui(client: httpx.Client) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text.lower()
    assert "OpenRouter Chat Backend" in response.text


def test_redoc_serves_redoc(client: httpx.Client) -> None:
    response = client.get("/redoc")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "redoc" in response.text.lower()
    assert "OpenRouter Chat Backend" in response.text


class PageParts(HTMLParser):
    """The scripts, stylesheets and inline scripts of a page, as the browser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value for value in found.values() if value and "://" in value]
        is_file = (tag == "script" and "src" in found) or (tag == "link" and "href" in found)
        if is_file and found.get("rel") != "icon":
            self.external.append(found)

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline.append(data)


def policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = (part.strip() for part in response.headers["content-security-policy"].split(";"))
    return {name: sources.split() for name, _, sources in (d.partition(" ") for d in directives)}


def inline_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_run_only_pinned_files_and_talk_only_to_this_origin(
    client: httpx.Client, path: str
) -> None:
    response = client.get(path)
    csp = policy(response)
    page = PageParts()
    page.feed(response.text)

    assert csp["default-src"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["form-action"] == ["'none'"]
    assert "'unsafe-eval'" not in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # Every file from elsewhere: an exact, versioned URL, with an integrity hash the browser
    # checks, and nothing else the page names from another origin.
    assert page.external
    for tag in page.external:
        url = tag.get("src") or tag.get("href") or ""
        assert re.fullmatch(r"https://cdn\.jsdelivr\.net/npm/[a-z-]+@\d+\.\d+\.\d+/[\w./-]+", url)
        assert (tag.get("integrity") or "").startswith("sha384-"), tag
        assert tag.get("crossorigin") == "anonymous"
        directive = "script-src" if url.endswith(".js") else "style-src"
        assert url in csp[directive]
    assert sorted(page.urls) == sorted(
        tag.get("src") or tag.get("href") or "" for tag in page.external
    )
    # Scripts: those files, and the page's own inline script by its hash; no other source.
    scripts = [tag.get("src") or "" for tag in page.external if tag.get("src")]
    assert sorted(csp["script-src"]) == sorted(
        [*(inline_hash(script) for script in page.inline), *scripts]
    )
    assert len(page.inline) == 1


def test_docs_enabled_false_turns_the_viewers_off(start_api: Callable[..., WebProcess]) -> None:
    web = start_api(DOCS_ENABLED="false")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        pages = [http.get(path) for path in ("/docs", "/redoc")]
        document = http.get("/openapi.json")

    for page in pages:
        assert page.status_code == 404
        assert page.json()["error"]["type"] == "not_found"
    # The document is data, not a page: clients and code generators keep it.
    assert document.status_code == 200


def test_document_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["info"]["description"]


# ---- what it describes -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_is_described(document: dict[str, Any], method: str, path: str) -> None:
    assert path in document["paths"], f"{path} is missing"
    op = document["paths"][path].get(method)
    assert op is not None, f"{method.upper()} {path} is missing"
    assert op["summary"].strip()
    assert op["description"].strip()


@pytest.mark.parametrize(("method", "path"), [e for e in ENDPOINTS if e[0] != "delete"])
def test_success_responses_describe_their_body(
    document: dict[str, Any], method: str, path: str
) -> None:
    ok = operation(document, method, path)["responses"]["200"]

    schema = json_schema_of(document, ok)

    # Every JSON answer is an object with named fields, not an opaque string.
    assert schema.get("type") == "object", schema
    assert schema.get("properties"), schema


def test_delete_documents_204(document: dict[str, Any]) -> None:
    assert "204" in operation(document, "delete", "/sessions/{session_id}")["responses"]


def test_chat_request_schema_states_its_constraints(document: dict[str, Any]) -> None:
    schema = chat_request(document)
    fields = schema["properties"]

    assert "message" in schema["required"]
    assert fields["message"]["minLength"] == 1
    assert fields["temperature"].get("minimum") == 0, fields["temperature"]
    assert fields["temperature"]["maximum"] == 2
    assert fields["max_tokens"]["minimum"] == 1
    for name in ("message", "model", "temperature", "max_tokens", "session_id", "system_prompt"):
        assert fields[name].get("description"), f"{name} is not described"


def test_chat_request_session_id_pattern_is_the_issues(document: dict[str, Any]) -> None:
    pattern = re.compile(chat_request(document)["properties"]["session_id"]["pattern"])

    for good in ["a", "A-z_0-9", "x" * 64, "3q2-7wEVQb6sBsl2QFzJ9g"]:
        assert pattern.search(good), good
    for bad in ["", "x" * 65, "dot.ted", "sp ace", "slash/", "new\nline", "café"]:
        assert not pattern.search(bad), bad


def test_session_id_path_parameter_has_the_pattern(document: dict[str, Any]) -> None:
    for method in ("get", "delete"):
        params = operation(document, method, "/sessions/{session_id}")["parameters"]
        (param,) = [p for p in params if p["name"] == "session_id"]
        assert param["in"] == "path"
        assert param["required"] is True
        pattern = re.compile(param["schema"]["pattern"])
        assert pattern.search("A-z_0-9")
        assert not pattern.search("dot.ted")
        assert not pattern.search("x" * 65)


def test_list_parameters_state_their_bounds(document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in operation(document, "get", "/sessions")["parameters"]}

    assert params["limit"]["schema"]["minimum"] == 1
    assert params["limit"]["schema"]["maximum"] == 100
    assert params["offset"]["schema"]["minimum"] == 0


@pytest.mark.parametrize("status", CHAT_ERRORS)
def test_chat_error_responses_use_the_error_body(document: dict[str, Any], status: str) -> None:
    responses = operation(document, "post", "/chat")["responses"]

    assert status in responses, f"{status} is not documented on POST /chat"
    assert responses[status]["description"].strip()
    assert_error_body(document, responses[status])


QUOTA_HEADERS = {
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Limit-Tokens",
    "X-RateLimit-Remaining-Tokens",
    "X-RateLimit-Reset-Tokens",
}


def test_chat_documents_the_rate_limit_and_its_headers(document: dict[str, Any]) -> None:
    responses = operation(document, "post", "/chat")["responses"]

    assert "RATE_LIMIT_PER_MINUTE" in responses["429"]["description"]
    assert set(responses["429"]["headers"]) == {"Retry-After", *QUOTA_HEADERS}
    assert set(responses["200"]["headers"]) == QUOTA_HEADERS
    for status in ("200", "429"):
        for name, spec in responses[status]["headers"].items():
            assert spec["schema"]["type"] == "integer", name
            assert spec["description"].strip(), name


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [(m, p, s) for (m, p), statuses in SESSION_ERRORS.items() for s in statuses],
)
def test_session_error_responses_use_the_error_body(
    document: dict[str, Any], method: str, path: str, status: str
) -> None:
    responses = operation(document, method, path)["responses"]

    assert status in responses, f"{status} is not documented on {method.upper()} {path}"
    assert_error_body(document, responses[status])


@pytest.mark.parametrize("status", ["502", "503", "504"])
def test_models_error_responses_use_the_error_body(document: dict[str, Any], status: str) -> None:
    responses = operation(document, "get", "/models")["responses"]

    assert_error_body(document, responses[status])
    assert "304" in responses


@pytest.mark.parametrize("status", ["400", "401", "404", "429", "502", "503"])
def test_v1_errors_use_openais_error_body(document: dict[str, Any], status: str) -> None:
    response = operation(document, "post", "/v1/chat/completions")["responses"][status]

    body = json_schema_of(document, response)
    detail = resolve(document, body["properties"]["error"])
    assert set(detail["required"]) >= {"message", "type", "code"}


def test_v1_documents_the_session_header(document: dict[str, Any]) -> None:
    params = operation(document, "post", "/v1/chat/completions")["parameters"]

    [header] = [p for p in params if p["in"] == "header" and p["name"] == "X-Session-Id"]
    assert header["required"] is False
    assert "new" in header["description"]


def test_health_documents_its_503(document: dict[str, Any]) -> None:
    responses = operation(document, "get", "/health")["responses"]

    assert "503" in responses, "GET /health answers 503 when Redis is unreachable"


def test_bearer_security_scheme(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    bearer_schemes = {
        name
        for name, scheme in schemes.items()
        if scheme["type"] == "http" and scheme["scheme"] == "bearer"
    }

    for method, path in AUTHENTICATED:
        requirements = operation(document, method, path).get("security") or []
        named = {name for requirement in requirements for name in requirement}
        assert named, f"{method.upper()} {path} names no security scheme"
        assert named <= bearer_schemes, f"{method.upper()} {path}: {named}"
    # No key needed for these.
    for method, path in [("get", "/models"), ("get", "/health")]:
        assert not operation(document, method, path).get("security")


# ---- admin routes ----------------------------------------------------------------------------


def test_admin_routes_are_absent_without_admin_token(
    document: dict[str, Any], client: httpx.Client
) -> None:
    assert not [path for path in document["paths"] if path.startswith("/admin")]
    for path in ("/admin/sessions", "/admin/stats", f"/admin/sessions/{'0' * 32}/some-id"):
        response = client.get(path, headers={"Authorization": "Bearer anything-at-all-here"})
        assert response.status_code == 404, path
        assert response.json()["error"]["status"] == 404


def test_admin_routes_appear_with_admin_token(start_api: Callable[..., WebProcess]) -> None:
    token = "admin-token-for-tests-0123456789"
    web = start_api(ADMIN_TOKEN=token)

    with httpx.Client(base_url=web.url, timeout=10) as http:
        document = http.get("/openapi.json").json()
        allowed = http.get("/admin/sessions", headers={"Authorization": f"Bearer {token}"})
        refused = http.get("/admin/sessions")

    assert [path for path in document["paths"] if path.startswith("/admin")]
    assert allowed.status_code == 200
    assert refused.status_code == 401
