"""`GET /metrics` for Prometheus, and the middleware that records every request.

Requests are labelled by route *template* (`/sign/{token}`), never the raw path: a raw path
would put every signing token into a label and grow the series without bound. Paths that match
no route share one `<unmatched>` label for the same reason.

The middleware also counts callback verification failures: by contract (docs/architecture.md) a forged or
stale chat or provider callback is answered 401, so a 401 on `/im/<platform>/...` or
`/esign/<provider>/webhook` *is* one. Counting it here covers every platform without each
handler having to remember; callbacks that arrive outside HTTP (stream / long-connection
modes) call `signbridge.core.metrics.callback_verification_failed` themselves.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signbridge.core.metrics import callback_verification_failed

router = APIRouter(tags=["health"])

UNMATCHED = "<unmatched>"
# Provider names as a label must come from this list: the path segment is whatever a caller sent.
PROVIDERS = frozenset({"esign_cn", "fadada", "docusign", "dropbox_sign", "docuseal", "local"})

REQUESTS = Counter("signbridge_http_requests", "HTTP requests handled by the API", ["method", "route", "status"])
LATENCY = Histogram(
    "signbridge_http_request_duration_seconds", "Time to answer an HTTP request",
    ["method", "route", "status"],
    # Chat platforms give us 3 s (Slack, Feishu) or 5 s (WeCom): buckets around those deadlines.
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
)


def _registry() -> CollectorRegistry:
    """The default registry, or a merged view of all processes under uvicorn `--workers N`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware), so streaming responses and background tasks are untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started is a server error
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            labels = {"method": scope["method"], "route": route, "status": str(status)}
            REQUESTS.labels(**labels).inc()
            LATENCY.labels(**labels).observe(time.perf_counter() - start)
            if status == 401 and (source := _callback_source(route, scope)):
                callback_verification_failed(source)


def _route_template(scope: Scope) -> str:
    """The matched route's template, including any `include_router(prefix=...)`.

    FastAPI >= 0.16x includes routers lazily and puts the *original* route (without the
    include prefix) in `scope["route"]`; the full template is on its effective route context.
    Both are read defensively so a FastAPI upgrade degrades to the route's own path.
    """
    fastapi_scope = scope.get("fastapi")
    effective: Any = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    route: Any = scope.get("route")
    for candidate in (effective, route):
        path = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
        if path:
            return str(path)
    return UNMATCHED


def _callback_source(route: str, scope: Scope) -> str | None:
    """`slack` for `/im/slack/events`, `docusign` for `/esign/docusign/webhook`; None otherwise."""
    parts = route.split("/")
    if route.startswith("/im/") and len(parts) > 2 and "{" not in parts[2]:
        return parts[2]
    if route == "/esign/{provider}/webhook":
        provider = str(scope.get("path_params", {}).get("provider", ""))
        return provider if provider in PROVIDERS else "other"
    return None


def install_metrics(app: FastAPI) -> None:
    """Add the request middleware; call in `create_app` before the app starts serving."""
    app.add_middleware(MetricsMiddleware)
