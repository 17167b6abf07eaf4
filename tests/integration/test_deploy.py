"""The deployment files: compose.yaml, deploy/Dockerfile and .dockerignore.

No Docker engine is needed: compose.yaml is validated against the Compose
Specification's JSON schema (vendored in tests/data, see its README.md) and both
files are checked against what mailsched really accepts: its commands, its settings.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mailsched.cli import _parser
from mailsched.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"

ROLES = {"producer": ["api"], "consumer": ["worker"], "webhooks": ["webhooks"]}


# --- loading -------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)  # resolves anchors and `<<:` merge keys
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _compose()


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` in either Compose form (mapping or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments may sit inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return value


def _env_instruction_keys(args: str) -> list[str]:
    return [word.split("=", 1)[0] for word in shlex.split(args)]


def _setting_variables() -> set[str]:
    """Every variable name Settings reads: MAILSCHED_<FIELD>, or the field's alias."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        names.add(alias.upper() if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


# --- the Compose Specification ---------------------------------------------------------


def test_compose_file_follows_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert _schema_errors(validator, compose) == []


def test_compose_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def _with_unknown_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["producer"]["comand"] = ["api"]


def _with_ports_as_a_mapping(doc: dict[str, Any]) -> None:
    doc["services"]["producer"]["ports"] = {"8080": 8080}


def _with_an_unknown_condition(doc: dict[str, Any]) -> None:
    doc["services"]["consumer"]["depends_on"]["mysql"]["condition"] = "service_ready"


def _with_an_unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["service"] = doc["services"]


@pytest.mark.parametrize(
    "breakage",
    [
        _with_unknown_service_key,
        _with_ports_as_a_mapping,
        _with_an_unknown_condition,
        _with_an_unknown_top_level_key,
    ],
)
def test_the_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator, breakage: Any
) -> None:
    # The validator must be able to fail: a schema that loaded as `{}`, or a draft
    # mismatch that ignores keywords, would let everything through.
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert _schema_errors(validator, broken) != []


# --- the services -----------------------------------------------------------------------


@pytest.mark.parametrize(("service", "command"), sorted(ROLES.items()))
def test_roles_run_the_commands_the_tests_run(
    compose: dict[str, Any], service: str, command: list[str]
) -> None:
    spec = compose["services"][service]
    assert spec["command"] == command
    assert "entrypoint" not in spec, "the image's ENTRYPOINT (mailsched) must stay in force"
    args = _parser().parse_args(spec["command"])  # mailsched <command> must be real
    assert args.command == command[0]


@pytest.mark.parametrize("service", sorted(ROLES))
def test_roles_build_the_one_dockerfile(compose: dict[str, Any], service: str) -> None:
    build = compose["services"][service]["build"]
    assert isinstance(build, dict)
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_consumer_can_be_scaled(compose: dict[str, Any]) -> None:
    # Published host ports, a fixed container name or host networking would make a
    # second replica of `docker compose up --scale consumer=3` collide with the first.
    consumer = compose["services"]["consumer"]
    assert "ports" not in consumer
    assert "container_name" not in consumer
    assert consumer.get("network_mode") != "host"


def test_producer_publishes_the_api(compose: dict[str, Any]) -> None:
    assert "8080:8080" in [str(p) for p in compose["services"]["producer"]["ports"]]


def test_every_dependency_exists_and_can_become_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    image_has_healthcheck = any(kw == "HEALTHCHECK" for kw, _ in _final_stage())
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            if spec.get("condition") != "service_healthy":
                continue
            check = services[target].get("healthcheck")
            if check is not None:
                assert not check.get("disable"), f"{name} waits on {target}'s disabled check"
            else:
                assert "build" in services[target] and image_has_healthcheck, (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )


def test_roles_wait_for_their_backing_services(compose: dict[str, Any]) -> None:
    for service in ROLES:
        deps = _depends_on(compose["services"][service])
        for backing in ("mysql", "kafka"):
            assert deps[backing]["condition"] == "service_healthy", (service, backing)


# --- settings ---------------------------------------------------------------------------


def test_settings_aliases_are_known() -> None:
    names = _setting_variables()
    assert {"MAILSCHED_FROM", "MAILSCHED_DATABASE_URL", "MAILSCHED_SMTP_URL"} <= names
    assert "MAILSCHED_FROM_" not in names


def test_every_mailsched_variable_is_a_setting(compose: dict[str, Any]) -> None:
    # Every MAILSCHED_* name anywhere in compose.yaml (environment mappings, the
    # x- extension fields) or set by ENV in the Dockerfile; a typo would be ignored
    # silently by Settings (extra="ignore"), so it has to be caught here.
    used = set(re.findall(r"\bMAILSCHED_[A-Z0-9_]+", COMPOSE_FILE.read_text(encoding="utf-8")))
    for service in _compose()["services"].values():
        used |= {k for k in _environment(service) if k.startswith("MAILSCHED_")}
    for keyword, args in _dockerfile_instructions():
        if keyword == "ENV":
            used |= {k for k in _env_instruction_keys(args) if k.startswith("MAILSCHED_")}
    assert used, "found no MAILSCHED_ variable at all"
    assert used - _setting_variables() == set()


@pytest.mark.parametrize("service", sorted(ROLES))
def test_role_environment_loads_as_valid_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("MAILSCHED_"):
            monkeypatch.delenv(name)
    for keyword, args in _dockerfile_instructions():  # the image's ENV first, like Docker
        if keyword == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                if key.startswith("MAILSCHED_"):
                    monkeypatch.setenv(key, value)
    for key, value in _environment(compose["services"][service]).items():
        monkeypatch.setenv(key, value)

    settings = Settings.load()

    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.database_url.startswith("mysql://")
    assert "@mysql:3306/" in settings.database_url
    kafka = settings.kafka()
    assert kafka is not None, "`mailsched api`/`worker` refuse to start without Kafka"
    assert kafka.bootstrap_servers == "kafka:9092"
    (smtp,) = settings.relays()
    assert (smtp.host, smtp.port) == ("mailpit", 1025)


# --- the Dockerfile ---------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    froms = [args for kw, args in _dockerfile_instructions() if kw == "FROM"]
    assert len(froms) >= 2, "build the wheel in a builder stage"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "python:3.11-slim" in text


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in _final_stage() if kw == "USER"]
    assert users, "the final stage sets no USER, so the container runs as root"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0")


def test_dockerfile_entrypoint_and_default_command() -> None:
    final = dict(_final_stage())  # the last of each instruction wins, as in Docker
    assert _exec_form(final["ENTRYPOINT"]) == ["mailsched"]
    assert _exec_form(final["CMD"]) == ["api"]
    assert "8080" in final["EXPOSE"].split()
    env = {}
    for kw, args in _final_stage():
        if kw == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args) if "=" in word)
    assert env.get("MAILSCHED_HOST") == "0.0.0.0"


def _healthcheck_command() -> list[str]:
    checks = [args for kw, args in _final_stage() if kw == "HEALTHCHECK"]
    assert checks, "the final stage has no HEALTHCHECK"
    args = checks[-1]
    assert args.upper() != "NONE"
    _options, command = re.split(r"\s+CMD\s+", args, maxsplit=1)
    return _exec_form(command)


def test_dockerfile_healthcheck_asks_the_api() -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib" in command[2]
    assert "127.0.0.1" in command[2]
    assert "/healthz" in command[2]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_dockerfile_healthcheck_command_works(status: int | None, healthy: bool) -> None:
    code = _healthcheck_command()[2]

    def run(port: int) -> int:
        env = {"MAILSCHED_PORT": str(port), "PATH": ""}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=30
        ).returncode

    if status is None:  # nothing listens: the API is down
        with _serving(200) as port:
            pass
        returncode = run(port)
    else:
        with _serving(status) as port:
            returncode = run(port)
    assert (returncode == 0) is healthy


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".services", "outbox", "*.db"} <= patterns
    assert not {"src", "pyproject.toml", "README.md"} & patterns
