"""Metrics and logs operators rely on: the API's `/metrics`, the domain counters, JSON logs that
carry the workflow id, and the worker's Temporal runtime metrics on a real dev server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from api.metrics import UNMATCHED, install_metrics
from api.metrics import router as metrics_router
from signbridge.core import metrics
from signbridge.core.observability import (
    THIRD_PARTY_LOGGERS,
    HumanFormatter,
    JsonFormatter,
    ObservabilitySettings,
    configure_logging,
    worker_runtime,
)
from signbridge.core.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`, from Prometheus text.

    The parser names counter samples `<name>_total` even where the exporter (Temporal's core)
    writes them without the suffix, so both spellings match.
    """
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in (name, f"{name}_total") and labels.items() <= s.labels.items():
                return float(s.value)
    return None


# ---- API /metrics -------------------------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI()
    install_metrics(app)
    app.include_router(metrics_router)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            from fastapi import HTTPException

            raise HTTPException(404)
        return {"id": item_id}

    sub = APIRouter()

    @sub.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(sub, prefix="/api/v1")

    def refuse() -> None:
        from fastapi import HTTPException

        raise HTTPException(401, "bad signature")

    app.add_api_route("/im/slack/events", refuse, methods=["POST"])
    app.add_api_route("/esign/{provider}/webhook", refuse, methods=["POST"])
    app.add_api_route("/api/v1/signing-requests", refuse, methods=["POST"])
    return app


async def _get(app: FastAPI, *paths: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        return [await http.get(p) for p in paths]


async def test_metrics_endpoint_exposes_request_metrics_by_route_template() -> None:
    app = _app()
    token = uuid.uuid4().hex
    before = REGISTRY.get_sample_value("signbridge_http_requests_total",
                                       {"method": "GET", "route": "/items/{item_id}", "status": "200"}) or 0
    responses = await _get(app, f"/items/{token}", "/items/other", "/items/missing", f"/nowhere/{token}",
                           f"/api/v1/things/{token}", "/metrics")
    assert [r.status_code for r in responses] == [200, 200, 404, 404, 200, 200]
    body = responses[-1]
    assert body.headers["content-type"].startswith("text/plain")
    text = body.text
    # Labelled by template: the raw token never becomes a label value.
    assert token not in text
    assert _sample(text, "signbridge_http_requests_total",
                   method="GET", route="/items/{item_id}", status="200") == before + 2
    assert (_sample(text, "signbridge_http_requests_total", route="/items/{item_id}", status="404") or 0) >= 1
    assert (_sample(text, "signbridge_http_requests_total", route=UNMATCHED, status="404") or 0) >= 1
    # A router included with a prefix is labelled with the full template.
    assert (_sample(text, "signbridge_http_requests_total", route="/api/v1/things/{thing_id}") or 0) >= 1
    assert (_sample(text, "signbridge_http_request_duration_seconds_count",
                    route="/items/{item_id}", status="200") or 0) >= 2
    assert _sample(text, "signbridge_http_request_duration_seconds_bucket",
                   route="/items/{item_id}", status="200", le="3.0") is not None


async def test_the_real_app_serves_metrics(tmp_path: Path) -> None:
    """`api.main` lists `api.metrics`; with `install_metrics` its real routes are counted too."""
    app = create_app(Settings(data_dir=tmp_path))
    install_metrics(app)
    health, text = await _get(app, "/healthz", "/metrics")
    assert health.status_code == 200
    assert (_sample(text.text, "signbridge_http_requests_total", route="/healthz", status="200") or 0) >= 1


async def test_domain_counters_increment_and_are_exposed() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    started = value("signbridge_flows_started_total", platform="slack", provider="docusign")
    failures = value("signbridge_callback_verification_failures_total", source="feishu")
    stuck = value("signbridge_flow_outcomes_total", outcome="stuck")
    metrics.flow_started("slack", "docusign")
    metrics.callback_verification_failed("feishu")
    metrics.callback_verification_failed("feishu")
    metrics.flow_outcome("STUCK")  # SignStatus values are upper case
    assert value("signbridge_flows_started_total", platform="slack", provider="docusign") == started + 1
    assert value("signbridge_callback_verification_failures_total", source="feishu") == failures + 2
    assert value("signbridge_flow_outcomes_total", outcome="stuck") == stuck + 1
    other = value("signbridge_flow_outcomes_total", outcome="other")
    metrics.flow_outcome("finished-ish")  # never raises (it may run in workflow code)
    assert value("signbridge_flow_outcomes_total", outcome="other") == other + 1
    assert REGISTRY.get_sample_value("signbridge_flow_outcomes_total", {"outcome": "finished-ish"}) is None
    text = (await _get(_app(), "/metrics"))[0].text
    assert _sample(text, "signbridge_callback_verification_failures_total", source="feishu") == failures + 2


async def test_refused_callbacks_count_as_verification_failures() -> None:
    def value(source: str) -> float:
        return REGISTRY.get_sample_value("signbridge_callback_verification_failures_total", {"source": source}) or 0.0

    before = {s: value(s) for s in ("slack", "docusign", "other")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as http:
        statuses = [(await http.post(p)).status_code for p in (
            "/im/slack/events", "/esign/docusign/webhook", "/esign/docusign/webhook",
            f"/esign/made-up-{uuid.uuid4().hex[:6]}/webhook",  # caller-chosen: never its own label
            "/api/v1/signing-requests",  # a bad API key is not a forged callback
        )]
    assert statuses == [401] * 5
    assert value("slack") == before["slack"] + 1
    assert value("docusign") == before["docusign"] + 2
    assert value("other") == before["other"] + 1
    text = (await _get(_app(), "/metrics"))[0].text
    sources = {sample.labels["source"] for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "signbridge_callback_verification_failures_total"}
    assert "made-up-" not in text and not any(src.startswith(("made-up", "api")) for src in sources)


# ---- JSON logs ----------------------------------------------------------------------------


def _json_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_formatter_emits_the_workflow_id_when_present() -> None:
    logger, stream = _json_logger(f"test.json.{uuid.uuid4().hex[:6]}")
    logger.info("plain %s", "line")
    logger.warning("in a flow: 张三", extra={"temporal_workflow": {"workflow_id": "sign:slack:T1:E1", "run_id": "r1",
                                                                   "workflow_type": "SigningWorkflow"},
                                            "card_key": "k-1"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    plain, flow, failed = _lines(stream)
    assert plain["message"] == "plain line" and plain["level"] == "INFO" and "workflow_id" not in plain
    assert flow["workflow_id"] == "sign:slack:T1:E1" and flow["run_id"] == "r1"
    assert flow["message"] == "in a flow: 张三" and flow["card_key"] == "k-1"
    assert "temporal_workflow" not in flow  # flattened, not nested
    assert "RuntimeError: boom" in str(failed["exc_info"])


def test_configure_logging_switches_root_to_json() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging(ObservabilitySettings(log_format="json", log_level="debug"), stream)
        logging.getLogger("signbridge.test").debug("hello", extra={"request_id": "sign:x"})
        assert json.loads(stream.getvalue())["request_id"] == "sign:x"
        assert not workflow.logger.workflow_info_on_message and not activity.logger.activity_info_on_message
        configure_logging(ObservabilitySettings(log_format="text"), stream)
        assert isinstance(root.handlers[0].formatter, HumanFormatter)
        assert not workflow.logger.workflow_info_on_message  # the formatter shows the ids itself
        # Libraries' routine INFO lines (fontTools subsetting the stamp font) stay out; their
        # warnings and SignBridge's own INFO lines do not.
        before = stream.getvalue()
        logging.getLogger("fontTools.subset").info("maxp pruned")
        logging.getLogger("httpx").info("HTTP Request: POST ...")
        logging.getLogger("fontTools.subset").warning("glyph missing")
        logging.getLogger("signbridge.test").info("ours")
        added = stream.getvalue()[len(before):]
        assert "pruned" not in added and "HTTP Request" not in added
        assert "glyph missing" in added and "ours" in added
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
        for name in ("uvicorn.access", *THIRD_PARTY_LOGGERS):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_development_logs_are_one_short_line_per_event_and_production_logs_json() -> None:
    assert ObservabilitySettings(environment="development").format == "text"
    assert ObservabilitySettings(environment="production").format == "json"
    assert ObservabilitySettings(environment="development", log_format="json").format == "json"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(HumanFormatter())
    logger = logging.getLogger(f"test.human.{uuid.uuid4().hex[:6]}")
    logger.handlers, logger.propagate = [handler], False

    def fail() -> None:
        try:
            raise ConnectionError("connection refused " + "x" * 5000)
        except ConnectionError as e:
            raise RuntimeError("webhook chat failed card.upsert (HTTP 503):\n<html>busy</html>") from e

    try:
        fail()
    except RuntimeError:
        logger.warning("Completing activity as failed", exc_info=True, extra={
            "temporal_activity": {"workflow_id": "sign:webhook:default:e-1", "activity_type": "publish",
                                  "attempt": 3}})
    line = stream.getvalue()
    assert line.count("\n") == 1 and len(line) < 1200, line  # one short line, not a 5 KB traceback
    assert "WARNING" in line and "Completing activity as failed" in line
    assert "[sign:webhook:default:e-1 · step publish · attempt 3]" in line
    assert "RuntimeError: webhook chat failed card.upsert (HTTP 503): <html>busy</html>" in line
    assert "(tests/test_observability.py:" in line and "in fail)" in line and "← ConnectionError" in line


# ---- worker runtime metrics on a real dev server ------------------------------------------


@activity.defn(name="observability_greet")
async def greet(name: str) -> str:
    activity.logger.info("greeting %s", name)
    return f"hello {name}"


@workflow.defn(name="ObservabilityWorkflow")
class OutcomeWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        workflow.logger.info("starting")
        result: str = await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=10))
        metrics.flow_outcome("COMPLETED")
        return result


@pytest.fixture
def temporal_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("temporalio.workflow"), logging.getLogger("temporalio.activity")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield stream
    for lg, (level, _) in zip(loggers, saved, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


async def _scrape_until(url: str, name: str, timeout: float = 15.0, **labels: str) -> str:
    """Scrape until `name{labels}` appears (the exporter serves what the core has recorded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            text = (await http.get(url)).text
            if _sample(text, name, **labels) is not None:
                return text
            if asyncio.get_running_loop().time() > deadline:
                served = sorted({f.name for f in text_string_to_metric_families(text)})
                raise AssertionError(f"{name}{labels} not served at {url}; it serves {served}")
            await asyncio.sleep(0.1)


async def test_worker_runtime_serves_temporal_metrics(dev_env: WorkflowEnvironment, settings: Settings,
                                                      temporal_logs: io.StringIO) -> None:
    port = _free_port()
    runtime = worker_runtime(settings, bind_address=f"127.0.0.1:{port}")
    client = await Client.connect(dev_env.client.service_client.config.target_host, namespace="default",
                                  data_converter=pydantic_data_converter, runtime=runtime)
    workflow_id = f"sign:test:{uuid.uuid4().hex[:10]}"
    async with Worker(client, task_queue=settings.task_queue, workflows=[OutcomeWorkflow], activities=[greet],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        result = await client.execute_workflow(OutcomeWorkflow.run, "李四", id=workflow_id,
                                               task_queue=settings.task_queue)
    assert result == "hello 李四"

    url = f"http://127.0.0.1:{port}/metrics"
    text = await _scrape_until(url, "temporal_workflow_completed", workflow_type="ObservabilityWorkflow")
    assert _sample(text, "temporal_workflow_completed", task_queue=settings.task_queue,
                   app="signbridge-worker") == 1
    assert _sample(text, "temporal_activity_execution_latency_count", activity_type="observability_greet") == 1
    # The domain counter recorded from workflow code, through the replay-safe workflow meter.
    text = await _scrape_until(url, metrics.FLOW_OUTCOMES_NAME, outcome="completed")
    assert _sample(text, metrics.FLOW_OUTCOMES_NAME, outcome="completed", workflow_type="ObservabilityWorkflow") == 1

    # temporalio's own loggers put the ids in `extra`; the formatter lifts them to the top.
    lines = _lines(temporal_logs)
    wf = next(line for line in lines if str(line["message"]).startswith("starting"))
    act = next(line for line in lines if str(line["message"]).startswith("greeting 李四"))
    assert wf["workflow_id"] == act["workflow_id"] == workflow_id
    assert wf["workflow_type"] == "ObservabilityWorkflow" and act["activity_type"] == "observability_greet"
