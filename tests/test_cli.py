"""The `signbridge` command line: every command is wired and documented."""

from __future__ import annotations

import sys
import types

from typer.testing import CliRunner

from signbridge.cli.main import _split_address, app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("run", "worker", "api", "devserver", "demo", "requests", "identities", "db"):
        assert command in result.output


def test_demo_help_has_api_url() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    assert "--api-url" in result.output


def test_demo_passes_options_through(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}

    def fake_run_demo(**kwargs: object) -> int:
        seen.update(kwargs)
        return 3

    # A stand-in module: the wrapper is what is tested here, not the demo itself.
    monkeypatch.setitem(sys.modules, "signbridge.cli.demo", types.SimpleNamespace(run_demo=fake_run_demo))
    result = runner.invoke(app, ["demo", "--api-url", "http://example.test:9000"])
    assert result.exit_code == 3
    assert seen["api_url"] == "http://example.test:9000"


def test_split_address() -> None:
    assert _split_address("127.0.0.1:7233") == ("127.0.0.1", 7233)
    assert _split_address("temporal:7233") == ("temporal", 7233)
