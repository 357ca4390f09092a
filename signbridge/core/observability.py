"""Logs and metrics for operators: JSON log lines that carry the workflow id, and the worker's
Temporal runtime metrics on a Prometheus endpoint.

Why JSON: one flow's story is spread over the API, several workers and many days. With the
workflow id as a field (temporalio's workflow and activity loggers put it in `extra` as
`temporal_workflow` / `temporal_activity`), a log search for one id shows the whole flow.

Why a custom `Runtime`: Temporal's metrics (task latencies, schedule-to-start, sticky cache,
poller counts) live in the Rust core, not in `prometheus_client`; the core serves them itself
when its runtime is built with a `PrometheusConfig`. The API has its own `/metrics`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity, workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from signbridge.core.redaction import RedactSecrets
from signbridge.core.settings import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Flattened to the top level so log queries need no nesting: `workflow_id="sign:slack:..."`.
_TEMPORAL_KEYS = ("workflow_id", "run_id", "workflow_run_id", "workflow_type", "activity_id", "activity_type",
                  "attempt", "namespace", "task_queue")


# Loggers of libraries, set to `SIGNBRIDGE_THIRD_PARTY_LOG_LEVEL` (WARNING) by `configure_logging`.
THIRD_PARTY_LOGGERS = ("fontTools", "httpx", "httpcore", "Lark", "pyhanko", "pyhanko_certvalidator", "slack_sdk",
                       "urllib3", "botocore", "boto3", "s3transfer", "PIL", "multipart", "python_multipart")


class ObservabilitySettings(BaseSettings):
    """`SIGNBRIDGE_LOG_FORMAT`, `SIGNBRIDGE_LOG_LEVEL`, `SIGNBRIDGE_THIRD_PARTY_LOG_LEVEL`,
    `SIGNBRIDGE_WORKER_METRICS_ADDRESS`.

    Kept beside the code that reads them (not in `Settings`) so this module can change alone.
    """

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_", env_file=None, extra="ignore")

    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    # Libraries that narrate routine work at INFO (fontTools a line per font table each time a
    # stamp is drawn, httpx one per request): only their warnings, unless asked for more.
    third_party_log_level: str = "WARNING"
    worker_metrics_address: str = "127.0.0.1:9464"  # empty: no Prometheus endpoint on the worker


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


def configure_logging(obs: ObservabilitySettings | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root handlers with one writing JSON (or plain text) to `stream` (stderr)."""
    obs = obs or ObservabilitySettings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactSecrets())  # signing tokens and download signatures never reach a log
    if obs.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(obs.log_level.upper())
    # temporalio also appends its ids to the message text ("... ({'workflow_id': ...})"); in JSON
    # they are fields already, so the message stays what the code said.
    plain = obs.log_format != "json"
    workflow.logger.workflow_info_on_message = plain
    activity.logger.activity_info_on_message = plain
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
