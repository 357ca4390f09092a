"""Logs and metrics for operators: JSON log lines that carry the workflow id, and the worker's
Temporal runtime metrics on a Prometheus endpoint.

Why JSON in production: one flow's story is spread over the API, several workers and many days.
With the workflow id as a field (temporalio's workflow and activity loggers put it in `extra` as
`temporal_workflow` / `temporal_activity`), a log search for one id shows the whole flow.

Why another format in development: a person reads the `make run` terminal, not a log search.
`HumanFormatter` writes one short line per event — time, level, where, what, the flow and step
it belongs to, and an exception as its type, message and the line that raised it — where JSON
would print a 2–5 KB traceback for every failed activity attempt. The standard library's
`logging` does both (no structlog): every library SignBridge uses already logs through it.
`SIGNBRIDGE_LOG_FORMAT` (`json` or `text`) overrides the choice made by `SIGNBRIDGE_ENVIRONMENT`.

Why a custom `Runtime`: Temporal's metrics (task latencies, schedule-to-start, sticky cache,
poller counts) live in the Rust core, not in `prometheus_client`; the core serves them itself
when its runtime is built with a `PrometheusConfig`. The API has its own `/metrics`.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity, workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from signbridge.core.redaction import RedactSecrets
from signbridge.core.settings import DEVELOPMENT, Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Flattened to the top level so log queries need no nesting: `workflow_id="sign:slack:..."`.
_TEMPORAL_KEYS = ("workflow_id", "run_id", "workflow_run_id", "workflow_type", "activity_id", "activity_type",
                  "attempt", "namespace", "task_queue")


# Loggers of libraries, set to `SIGNBRIDGE_THIRD_PARTY_LOG_LEVEL` (WARNING) by `configure_logging`.
THIRD_PARTY_LOGGERS = ("alembic", "fontTools", "httpx", "httpcore", "Lark", "pyhanko", "pyhanko_certvalidator",
                       "slack_sdk", "urllib3", "botocore", "boto3", "s3transfer", "PIL", "multipart",
                       "python_multipart")


class ObservabilitySettings(BaseSettings):
    """`SIGNBRIDGE_LOG_FORMAT`, `SIGNBRIDGE_LOG_LEVEL`, `SIGNBRIDGE_THIRD_PARTY_LOG_LEVEL`,
    `SIGNBRIDGE_WORKER_METRICS_ADDRESS`.

    Kept beside the code that reads them (not in `Settings`) so this module can change alone.
    """

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_", env_file=None, extra="ignore")

    environment: str = "production"
    log_format: Literal["json", "text"] | None = None  # None: text in development, JSON elsewhere
    log_level: str = "INFO"
    # Libraries that narrate routine work at INFO (fontTools a line per font table each time a
    # stamp is drawn, httpx one per request): only their warnings, unless asked for more.
    third_party_log_level: str = "WARNING"
    worker_metrics_address: str = "127.0.0.1:9464"  # empty: no Prometheus endpoint on the worker

    @property
    def format(self) -> Literal["json", "text"]:
        return self.log_format or ("text" if self.environment == DEVELOPMENT else "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, Temporal ids, any other `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key in ("temporal_workflow", "temporal_activity") and isinstance(value, dict):
                out.update({k: value[k] for k in _TEMPORAL_KEYS if k in value})
            else:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


# The ids worth showing on a human's line, and how they are called there.
_HUMAN_KEYS = (("workflow_id", ""), ("activity_type", "step "), ("attempt", "attempt "))
MAX_HUMAN_MESSAGE = 400  # characters of an exception's message on a console line


class HumanFormatter(logging.Formatter):
    """One line per event for a developer's terminal:
    `18:53:02 WARNING temporalio.activity  Completing activity as failed  [sign:webhook:…:e-1 · step publish ·
    attempt 3]  ✗ ChatUnavailable: webhook chat failed card.upsert (HTTP 503) (activities/chat.py:57 in publish)`.
    The full traceback is in JSON mode (`SIGNBRIDGE_LOG_FORMAT=json`) when someone needs it."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{when} {record.levelname:<7} {record.name}  {record.getMessage()}"
        ids = {**getattr(record, "temporal_workflow", {}), **getattr(record, "temporal_activity", {})}
        shown = [f"{label}{ids[key]}" for key, label in _HUMAN_KEYS if ids.get(key) not in (None, "")]
        if shown:
            line += f"  [{' · '.join(shown)}]"
        if record.exc_info and record.exc_info[1] is not None:
            line += f"  ✗ {short_exception(record.exc_info[1])}"
        return line


def short_exception(error: BaseException) -> str:
    """`Type: message (file:line in function)` for the frame that raised it, and its cause."""
    text = f"{type(error).__name__}: {_one_line(str(error))}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({_short_path(last.filename)}:{last.lineno} in {last.name})"
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        text += f" ← {type(cause).__name__}: {_one_line(str(cause))}"
    return text


def _one_line(message: str) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= MAX_HUMAN_MESSAGE else flat[: MAX_HUMAN_MESSAGE - 1] + "…"


_OUR_PACKAGES = ("signbridge", "workflows", "activities", "api", "connectors", "store", "worker.py", "tests")


def _short_path(filename: str) -> str:
    """`activities/chat.py` for our code, `temporalio/…` for a library: not the whole venv path."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("site-packages"):])
    ours = next((i for i, part in enumerate(parts) if part in _OUR_PACKAGES), None)
    return "/".join(parts[ours:]) if ours is not None else Path(filename).name


def configure_logging(obs: ObservabilitySettings | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root handlers with one writing JSON (or a person's lines) to `stream` (stderr)."""
    obs = obs or ObservabilitySettings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactSecrets())  # signing tokens and download signatures never reach a log
    handler.setFormatter(JsonFormatter() if obs.format == "json" else HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(obs.log_level.upper())
    # temporalio would also append its ids to the message text ("... ({'workflow_id': ...})"); both
    # formats show them already (JSON as fields, a person's line in brackets), so the message stays
    # what the code said.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    # uvicorn's access log repeats what the metrics middleware counts. (Run uvicorn with
    # `log_config=None`, else it installs its own plain-text handlers over these.)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(obs.third_party_log_level.upper())
    return handler


def worker_runtime(settings: Settings, obs: ObservabilitySettings | None = None,
                   bind_address: str | None = None) -> Runtime:
    """A Temporal runtime whose core serves Prometheus metrics at `bind_address`.

    Pass it to `Client.connect(..., runtime=...)` for the worker's client: a worker uses its
    client's runtime. Without an address (empty setting) the runtime has no metrics exporter.
    """
    obs = obs or ObservabilitySettings()
    address = bind_address if bind_address is not None else obs.worker_metrics_address
    metrics = PrometheusConfig(bind_address=address) if address else None
    return Runtime(telemetry=TelemetryConfig(
        metrics=metrics,
        global_tags={"app": "signbridge-worker"},
    ))
