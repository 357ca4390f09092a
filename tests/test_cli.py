"""The `signbridge` command line: every command is wired and documented."""

from __future__ import annotations

import os
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from signbridge.cli.main import app
from signbridge.cli.ports import PortProblem, plan, split_address
from signbridge.core.settings import Settings, load_env_file, project_dir
from tests.sim.servers import free_port

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


def test_demo_says_in_one_line_when_there_is_no_playground(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--api-url", f"http://127.0.0.1:{free_port()}", "--out-dir", str(tmp_path)])
    assert result.exit_code == 1 and "start it with `make run`" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_split_address() -> None:
    assert split_address("127.0.0.1:7233") == ("127.0.0.1", 7233)
    assert split_address("temporal:7233") == ("temporal", 7233)


# ---- .env, the project folder, ports -------------------------------------------------------





@pytest.fixture
def clean_environ() -> Iterator[None]:
    """`load_env_file` writes this process's environment: put it back afterwards."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_env_file_is_read_by_every_command_and_the_environment_wins(
        tmp_path: Path, clean_environ: None, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "from-dotenv"
    dotenv = tmp_path / "my.env"
    dotenv.write_text(f"SIGNBRIDGE_DATA_DIR={data}\nSIGNBRIDGE_OPERATORS=u-from-file\n"
                      "POSTGRES_TEMPORAL_PASSWORD=not-ours\n", encoding="utf-8")
    monkeypatch.setenv("SIGNBRIDGE_ENV_FILE", str(dotenv))
    monkeypatch.setenv("SIGNBRIDGE_OPERATORS", "u-from-environment")
    monkeypatch.delenv("SIGNBRIDGE_DATA_DIR", raising=False)
    monkeypatch.delenv("SIGNBRIDGE_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "upgrade"])  # any command: the callback reads the file first
    assert result.exit_code == 0, result.output
    assert (data / "signbridge.db").exists()  # the data dir came from the file
    assert os.environ["SIGNBRIDGE_OPERATORS"] == "u-from-environment"  # a variable already set wins
    assert "POSTGRES_TEMPORAL_PASSWORD" not in os.environ  # only SignBridge's settings are taken
    assert load_env_file() == []  # nothing left to set


def test_data_dir_is_resolved_against_the_project_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `signbridge identities list` typed in another folder
    assert Settings(data_dir=Path(".data")).data_dir == project_dir() / ".data"
    assert project_dir() == Path(__file__).resolve().parents[1]
    assert Settings(data_dir=tmp_path / "abs").data_dir == tmp_path / "abs"


def test_every_port_moves_with_the_api_port_unless_set() -> None:
    moved = plan(8100, None, {})
    assert (moved.api_port, moved.temporal_port, moved.ui_port) == (8100, 7333, 8333)
    assert moved.metrics_address == "127.0.0.1:9564" and moved.public_url == "http://127.0.0.1:8100"
    assert moved.env["SIGNBRIDGE_WEBHOOK_OUTBOUND_URL"] == "http://127.0.0.1:8100/playground/outbound"
    assert moved.env["SIGNBRIDGE_TEMPORAL_ADDRESS"] == "127.0.0.1:7333"
    assert [b.what for b in moved.bound()] == ["API", "Temporal", "Temporal UI", "worker metrics"]

    chosen = plan(8100, None, {"SIGNBRIDGE_TEMPORAL_ADDRESS": "127.0.0.1:17233", "SIGNBRIDGE_PUBLIC_URL":
                               "https://sign.example.com/", "SIGNBRIDGE_WORKER_METRICS_ADDRESS": ""})
    assert chosen.temporal_port == 17233 and chosen.ui_port == 18233  # the UI follows Temporal's port
    assert chosen.public_url == "https://sign.example.com" and chosen.metrics_address == ""
    assert "SIGNBRIDGE_TEMPORAL_ADDRESS" not in chosen.env and len(chosen.bound()) == 3
    assert plan(8000, 9999, {}).ui_port == 9999
    with pytest.raises(PortProblem, match="SIGNBRIDGE_WORKER_METRICS_ADDRESS"):
        plan(64100, None, {})  # 9464 + 56100 is no port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_taken_port_is_one_line_naming_the_setting(taken_port: int, tmp_path: Path) -> None:
    env = {"SIGNBRIDGE_DATA_DIR": str(tmp_path), "SIGNBRIDGE_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "SIGNBRIDGE_WORKER_METRICS_ADDRESS": "", "SIGNBRIDGE_ENV_FILE": ""}
    api = runner.invoke(app, ["run", "--api-port", str(taken_port)], env=env)
    assert api.exit_code == 1 and len(api.output.strip().splitlines()) == 1, api.output
    assert f"127.0.0.1:{taken_port} for the API is already in use" in api.output and "PORT=" in api.output

    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    metrics = runner.invoke(app, ["run", "--api-port", str(api_port), "--ui-port", str(ui_port)], env={
        **env, "SIGNBRIDGE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "SIGNBRIDGE_WORKER_METRICS_ADDRESS": f"127.0.0.1:{taken_port}"})
    assert metrics.exit_code == 1 and len(metrics.output.strip().splitlines()) == 1, metrics.output
    assert "worker metrics" in metrics.output and "SIGNBRIDGE_WORKER_METRICS_ADDRESS" in metrics.output


def test_the_worker_says_which_setting_when_its_metrics_port_is_taken(taken_port: int) -> None:
    from worker import metrics_runtime

    env = {"SIGNBRIDGE_WORKER_METRICS_ADDRESS": f"127.0.0.1:{taken_port}"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(SystemExit) as exited:
            metrics_runtime(Settings())
    message = str(exited.value.code)
    assert "\n" not in message and "SIGNBRIDGE_WORKER_METRICS_ADDRESS" in message and str(taken_port) in message
