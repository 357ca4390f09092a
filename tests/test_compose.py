"""docker-compose.yml, .env.example and the Dockerfile agree with the Compose Specification and
with the application (Docker cannot run here, so this is what stands between a typo and a
deployment that silently ignores a setting).

- the compose file validates against the Compose Specification (JSON Schema draft 2020-12);
- the services, their start order and their health checks are the production shape;
- every SIGNBRIDGE_* key in compose or .env.example is a field of a settings class in the code,
  every core setting is documented in .env.example, and every secret is either required by
  compose (`${VAR:?...}`) or documented empty;
- the API's port is the same in the Dockerfile, the CLI, the compose command, the published port
  and the health check.
"""

from __future__ import annotations

import importlib
import json
import logging
import logging.config
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from signbridge.cli import main as cli
from signbridge.cli.main import app
from signbridge.core.observability import ObservabilitySettings
from signbridge.core.settings import DEV_SECRET, Settings
from signbridge.core.shutdown import GRACEFUL_SHUTDOWN_TIMEOUT
from store.s3_blobs import S3Settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(os.environ.get("SIGNBRIDGE_COMPOSE_SCHEMA", ROOT / "tests" / "schemas" / "compose-spec.json"))
# The core classes, imported above so `_settings_classes` finds them however this test is run alone.
CORE_SETTINGS: tuple[type[BaseSettings], ...] = (Settings, S3Settings, ObservabilitySettings)
APP_SERVICES = ("api", "worker", "temporal-setup", "migrate")
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env_example() -> dict[str, tuple[str, bool]]:
    """key -> (value, active) for every `KEY=value` line, commented (`# KEY=default`) or not."""
    out: dict[str, tuple[str, bool]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := ENV_LINE.match(line.strip()):
            assert m.group(1) not in out, f"{m.group(1)} appears twice in .env.example"
            out[m.group(1)] = (m.group(2), not line.startswith("#"))
    return out


def _subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _settings_classes() -> list[type[BaseSettings]]:
    """Every settings class reading SIGNBRIDGE_*: the core ones and each connector's."""
    from connectors.chat.registry import PLATFORMS, SSO_PLATFORMS
    from connectors.esign.registry import PROVIDER_MODULES

    for name in (*(f"connectors.chat.{p}.client" for p in PLATFORMS),
                 *(f"connectors.chat.{p}.sso" for p in SSO_PLATFORMS), *PROVIDER_MODULES):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the registries skip a platform not built yet, and so do we
                raise
    return [c for c in _subclasses(BaseSettings)
            if str(c.model_config.get("env_prefix", "")).startswith("SIGNBRIDGE_")]


def _env_names(cls: type[BaseSettings]) -> dict[str, Any]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper(): field for name, field in cls.model_fields.items()}


def _known_keys() -> dict[str, Any]:
    known: dict[str, Any] = {}
    for cls in _settings_classes():
        known.update(_env_names(cls))
    return known


def _is_secret(field: Any) -> bool:
    return "SecretStr" in str(field.annotation) or field.annotation is SecretStr


# ---- the Compose Specification -------------------------------------------------------------


def test_compose_file_matches_the_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_validation_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The schema check has teeth: a misspelt key and a wrong type are both reported."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    broken["services"]["worker"]["depends_on"] = 42
    assert len(list(jsonschema.Draft202012Validator(schema).iter_errors(broken))) >= 2


# ---- services, order, health ---------------------------------------------------------------


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-setup",
                             "migrate", "temporal-ui", "api", "worker", "gotenberg"}

    def after(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert after("temporal-schema") == {"postgresql": "service_healthy"}
    assert after("temporal") == {"temporal-schema": "service_completed_successfully"}
    assert after("temporal-namespace") == {"temporal": "service_healthy"}
    assert after("temporal-setup") == {"temporal-namespace": "service_completed_successfully"}
    assert after("migrate") == {"postgresql": "service_healthy"}
    assert after("temporal-ui") == {"temporal": "service_healthy"}
    for name in ("api", "worker"):
        assert after(name) == {"temporal-setup": "service_completed_successfully",
                               "migrate": "service_completed_successfully"}
    # Long-running services restart and report health; one-shot jobs only retry on failure.
    for name in ("postgresql", "temporal", "api", "worker", "gotenberg"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped"
    for name in ("temporal-schema", "temporal-namespace", "temporal-setup", "migrate"):
        assert services[name]["restart"].startswith("on-failure"), name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_images_are_pinned_and_temporal_is_not_auto_setup(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        if "build" in svc:
            assert svc["build"] == "." and name in APP_SERVICES
            continue
        tag = svc["image"].partition(":")[2]
        assert tag and tag != "latest" and re.match(r"^\d+\.\d+", tag), f"{name}: {svc['image']} is not pinned"
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert not any("auto-setup" in str(s.get("image", "")) for s in services.values())
    # Server and admin-tools move together: the schema tool must know the server's schema.
    server_tag = services["temporal"]["image"].split(":")[1]
    for job in ("temporal-schema", "temporal-namespace"):
        assert services[job]["image"] == f"temporalio/admin-tools:{server_tag}"


def test_schema_job_sets_up_both_temporal_databases(compose: dict[str, Any]) -> None:
    script = "\n".join(compose["services"]["temporal-schema"]["command"])
    assert "for db in temporal temporal_visibility" in script
    for step in ("create", "setup-schema -v 0.0", "update-schema -d /etc/temporal/schema/postgresql/v12/"):
        assert step in script
    assert "postgres12" in script and "$$dir/versioned" in script
    env = compose["services"]["temporal"]["environment"]
    assert env["DB"] == "postgres12" and env["DBNAME"] == "temporal"
    assert env["VISIBILITY_DBNAME"] == "temporal_visibility"


def test_one_shot_commands_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["temporal-setup"]["command"] == ["signbridge", "setup-temporal"]
    assert services["migrate"]["command"] == ["signbridge", "db", "upgrade"]
    runner = CliRunner()
    assert "setup-temporal" in runner.invoke(app, ["--help"]).output
    assert "upgrade" in runner.invoke(app, ["db", "--help"]).output
    namespace_job = "\n".join(services["temporal-namespace"]["command"])
    assert "temporal operator namespace create" in namespace_job and "describe" in namespace_job


# ---- settings agree with the application ---------------------------------------------------


def test_every_signbridge_key_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = _known_keys()
    used = {k for svc in compose["services"].values() for k in (svc.get("environment") or {})}
    used |= set(_env_example())
    unknown = sorted(k for k in used if k.startswith("SIGNBRIDGE_") and k not in known)
    assert not unknown, f"not a field of any settings class (typo, or a setting that no longer exists): {unknown}"


def test_env_example_documents_every_setting_and_every_secret() -> None:
    documented = set(_env_example())
    for cls in _settings_classes():
        missing = sorted(set(_env_names(cls)) - documented)
        assert not missing, f"{cls.__name__} fields missing from .env.example: {missing}"
    secrets = sorted(k for k, f in _known_keys().items() if _is_secret(f) and k not in documented)
    assert not secrets, f"secrets an admin must know about, missing from .env.example: {secrets}"


def test_secrets_are_placeholders_and_required_ones_are_enforced(compose: dict[str, Any]) -> None:
    env = _env_example()
    known = _known_keys()
    for key, (value, _) in env.items():
        if (key in known and _is_secret(known[key])) or key.endswith("PASSWORD"):
            assert value == "", f"{key} must be an empty placeholder in .env.example, not {value!r}"
    # The secrets Settings refuses to leave at their development default are required by compose,
    # so an empty one stops `docker compose up` instead of starting a service that will crash.
    production_required = {f"SIGNBRIDGE_{n.upper()}" for n, f in Settings.model_fields.items()
                           if isinstance(f.default, SecretStr) and f.default.get_secret_value() == DEV_SECRET}
    assert production_required == {"SIGNBRIDGE_WEBHOOK_SECRET", "SIGNBRIDGE_LINK_SECRET"}
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        for key in production_required:
            assert REQUIRED.fullmatch(environment[key]) and REQUIRED.match(environment[key]).group(1) == key  # type: ignore[union-attr]
        assert environment["SIGNBRIDGE_ENVIRONMENT"].startswith("${SIGNBRIDGE_ENVIRONMENT:-production")
        assert compose["services"][name]["env_file"] == [{"path": ".env", "required": True}]
    # Every variable compose requires is one .env.example asks for.
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(REQUIRED.findall(text))
    assert required == {"POSTGRES_TEMPORAL_PASSWORD", "POSTGRES_SIGNBRIDGE_PASSWORD",
                        "SIGNBRIDGE_WEBHOOK_SECRET", "SIGNBRIDGE_LINK_SECRET"}
    assert all(k in env and env[k][1] for k in required)


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value in .env.example (uncommented or shown as a default) parses as its field's type."""
    for key, (value, _) in _env_example().items():
        if key.startswith("SIGNBRIDGE_") and "<" not in value:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("SIGNBRIDGE_WEBHOOK_SECRET", "x" * 32)
    monkeypatch.setenv("SIGNBRIDGE_LINK_SECRET", "y" * 32)
    for cls in _settings_classes():
        cls()  # raises ValidationError on a value of the wrong shape
    settings = Settings()
    settings.check_production()
    assert settings.deadline.days == 7 and settings.step_retry_window.total_seconds() == 1800


def test_database_urls_point_at_the_compose_database(compose: dict[str, Any]) -> None:
    url = compose["services"]["api"]["environment"]["SIGNBRIDGE_DATABASE_URL"]
    assert url.startswith("postgresql://signbridge:") and url.endswith("@postgresql:5432/signbridge")
    init = compose["configs"]["postgres-init"]["content"]
    assert "CREATE ROLE signbridge" in init and "CREATE DATABASE signbridge OWNER signbridge" in init
    assert compose["services"]["api"]["environment"]["SIGNBRIDGE_TEMPORAL_ADDRESS"] == "temporal:7233"


# ---- ports, logging, shutdown --------------------------------------------------------------


def test_api_port_agrees_everywhere(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = {int(p) for line in dockerfile.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
    api = compose["services"]["api"]
    command = api["command"]
    port = int(command[command.index("--port") + 1])
    assert command[:2] == ["signbridge", "api"]  # one API process per core, as `signbridge api` starts them
    assert port == cli.API_PORT and port in exposed
    assert [p.rsplit(":", 1)[1] for p in api["ports"]] == [str(port)]
    assert f"127.0.0.1:{port}/readyz" in " ".join(api["healthcheck"]["test"])
    # The Dockerfile's default command is the same API on the same port.
    assert 'CMD ["signbridge", "api", "--host", "0.0.0.0"]' in dockerfile


def test_worker_metrics_port_agrees(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    address = worker["environment"]["SIGNBRIDGE_WORKER_METRICS_ADDRESS"]
    port = address.rsplit(":", 1)[1]
    assert port in (ROOT / "Dockerfile").read_text() and worker["expose"] == [port]
    assert f"127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    assert ObservabilitySettings().worker_metrics_address.endswith(f":{port}")


def test_worker_gets_longer_than_the_drain(compose: dict[str, Any]) -> None:
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > GRACEFUL_SHUTDOWN_TIMEOUT.total_seconds()


def test_api_log_config_is_a_working_json_logging_setup(compose: dict[str, Any], capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    api = compose["services"]["api"]
    target = api["command"][api["command"].index("--log-config") + 1]
    assert target.endswith(".json") and api["configs"] == [{"source": "api-logging", "target": target}]
    config = json.loads(compose["configs"]["api-logging"]["content"])
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logging.config.dictConfig(config)
        logging.getLogger("uvicorn.error").info("started", extra={"workflow_id": "sign:x"})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["message"] == "started" and line["workflow_id"] == "sign:x" and line["logger"] == "uvicorn.error"
        # uvicorn's access line for a signing link and a download link: no token, no signature left.
        logging.getLogger("uvicorn.access").warning('%s - "%s %s HTTP/%s" %d', "203.0.113.9:5", "GET",
                                                    "/files/ab?expires=9&sig=c0ffee&name=x.pdf", "1.1", 200)
        logging.getLogger("uvicorn.access").warning('%s - "%s %s HTTP/%s" %d', "203.0.113.9:5", "GET",
                                                    "/sign/tok-secret/pages/1.png", "1.1", 200)
        lines = [json.loads(raw)["message"] for raw in capsys.readouterr().err.strip().splitlines()]
        assert lines == ['203.0.113.9:5 - "GET /files/ab?expires=9&sig=<redacted>&name=x.pdf HTTP/1.1" 200',
                         '203.0.113.9:5 - "GET /sign/<redacted>/pages/1.png HTTP/1.1" 200']
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])


def test_dockerfile_copies_every_package_and_ignores_local_state() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    for package in ("signbridge", "workflows", "activities", "api", "connectors", "store", "migrations",
                    "worker.py", "alembic.ini"):
        assert package in dockerfile
    assert "USER signbridge" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".data", ".git"):
        assert entry in ignored
