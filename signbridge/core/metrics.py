"""Domain counters: what operators alert on (flows started, how they end, forged callbacks).

Two homes, one name per metric, chosen by where the event happens:

- In a process (the API, an activity): `prometheus_client` counters in the default registry,
  served by the API's `GET /metrics`.
- In workflow code: Temporal's workflow metric meter. It is replay-safe (a replay after a
  worker restart does not count a flow twice) and is exported by the worker's runtime
  Prometheus endpoint (see `signbridge.core.observability.worker_runtime`) next to Temporal's own
  metrics. Counting a flow's end from the workflow, not from an activity, is what makes it
  exact: activities retry, workflow code runs once per history event.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from temporalio import workflow

FLOWS_STARTED_NAME = "signbridge_flows_started_total"
FLOW_OUTCOMES_NAME = "signbridge_flow_outcomes_total"
CALLBACK_FAILURES_NAME = "signbridge_callback_verification_failures_total"

# Outcomes worth a counter: the terminal states, plus STUCK (not terminal, but what ops page on).
OUTCOMES = ("completed", "declined", "expired", "cancelled", "rejected", "stuck")  # else "other"

# prometheus_client appends `_total` to counters itself, so they are declared without it.
FLOWS_STARTED = Counter(
    FLOWS_STARTED_NAME.removesuffix("_total"), "Signing flows started (duplicates of a running flow excluded)",
    ["platform", "provider"],
)
FLOW_OUTCOMES = Counter(
    FLOW_OUTCOMES_NAME.removesuffix("_total"), "Signing flows reaching an outcome, counted outside workflow code",
    ["outcome"],
)
CALLBACK_VERIFICATION_FAILURES = Counter(
    CALLBACK_FAILURES_NAME.removesuffix("_total"),
    "Inbound callbacks refused for a bad signature, token or timestamp (forged or stale)",
    ["source"],
)


def flow_started(platform: str, provider: str) -> None:
    """Call once a `start_signing` really started a flow (not for a redelivered duplicate)."""
    FLOWS_STARTED.labels(platform=platform, provider=provider).inc()


def callback_verification_failed(source: str) -> None:
    """Call where a chat or provider callback is rejected with 401; `source` e.g. `slack`, `docusign`."""
    CALLBACK_VERIFICATION_FAILURES.labels(source=source).inc()


def flow_outcome(outcome: str) -> None:
    """Count a flow reaching `outcome` (a `SignStatus` value, any case; see `OUTCOMES`).

    From workflow code this goes through the replay-safe workflow meter; anywhere else through
    the process registry. It never raises: an exception in workflow code fails the workflow
    task, and a metric must not be able to wedge a signing flow. An unknown outcome is counted
    as `other` (a fixed label, so a bug cannot grow the series) and logged.
    """
    label = outcome.lower()
    if label not in OUTCOMES:
        log = workflow.logger if workflow.in_workflow() else logging.getLogger(__name__)
        log.warning("flow_outcome: unknown outcome %r counted as 'other'", outcome)
        label = "other"
    if workflow.in_workflow():
        counter = workflow.metric_meter().create_counter(
            FLOW_OUTCOMES_NAME, "Signing flows reaching an outcome, counted by the workflow"
        )
        counter.add(1, {"outcome": label})
    else:
        FLOW_OUTCOMES.labels(outcome=label).inc()
