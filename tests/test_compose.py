"""docker-compose.yml is valid against the Compose Specification (Docker cannot run here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from signbridge.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(os.environ.get("SIGNBRIDGE_COMPOSE_SCHEMA", "/work/shared/schemas/compose-spec.json"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.skipif(not SCHEMA.exists(), reason="compose-spec.json not available")
def test_compose_file_matches_the_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_services_and_their_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "api", "worker"} <= set(services)
    assert services["temporal"]["image"].startswith("temporalio/auto-setup")
    for name in ("api", "worker"):
        assert services[name]["build"] == "."
        assert "temporal-setup" in services[name]["depends_on"]
    # The one-shot setup runs a command that exists.
    command = services["temporal-setup"]["command"]
    assert command[:2] == ["signbridge", "setup-temporal"]
    assert "setup-temporal" in CliRunner().invoke(app, ["--help"]).output


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    for package in ("signbridge", "workflows", "activities", "api", "connectors", "store", "worker.py"):
        assert package in dockerfile
