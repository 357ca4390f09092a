"""What `signbridge api` does once, before uvicorn starts its processes, and what it tells them.

With `SIGNBRIDGE_API_PROCESSES` > 1 uvicorn spawns that many processes on one port. Each runs the
app's lifespan, so whatever must not run N times at once is done here first:

- the development schema (`create_all`): created here, so the processes find every table and their
  own `create_all` (serialised by a file lock in `api.main`) has nothing left to do;
- Prometheus: each process counts its own requests; `PROMETHEUS_MULTIPROC_DIR` (a fresh folder
  under the data dir unless set) lets every process's `GET /metrics` answer the sum of all of them;
- logging: spawned processes start with Python's defaults, so they configure SignBridge's logging
  (redaction included) themselves, told through `OWN_LOGGING` / `ACCESS_LOG`.

The installation CA needs nothing: `InstallationCA.load_or_create` creates its key file with
`O_EXCL`, so concurrent first uses agree on one CA.
"""

from __future__ import annotations

import os

from signbridge.core.settings import DEVELOPMENT, Settings
from store.db import create_all, get_engine
from store.files import private_dir

FACTORY = "api.main:create_served_app"
# Read by `api.main.create_served_app` in every process; not settings (nobody sets them by hand).
OWN_LOGGING = "_SIGNBRIDGE_API_OWN_LOGGING"
ACCESS_LOG = "_SIGNBRIDGE_API_ACCESS_LOG"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


SIGNING_ENV = "SIGNBRIDGE_SIGNING_PROCESSES"


def signing_share(api_processes: int) -> int:
    """Signing processes per API process when none is set: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // api_processes)


def prepare(settings: Settings, processes: int, *, access_log: bool, own_logging: bool) -> None:
    private_dir(settings.data_dir)
    if settings.environment == DEVELOPMENT:  # elsewhere `signbridge db upgrade` owns the schema
        engine = get_engine(settings.sqlalchemy_url)
        try:
            create_all(engine)
        finally:
            engine.dispose()
    if processes > 1 and not os.environ.get(METRICS_ENV):
        folder = private_dir(settings.data_dir / "api-metrics")
        for stale in folder.glob("*.db"):  # counts of an earlier run's processes
            stale.unlink()
        os.environ[METRICS_ENV] = str(folder)
    if settings.signing_processes is None:
        # Each API process has a signing pool of its own: together they use the cores once, not
        # once each (2 processes × 2 children on 2 cores would only add memory).
        os.environ[SIGNING_ENV] = str(signing_share(processes))
    os.environ[OWN_LOGGING] = "1" if own_logging else ""
    os.environ[ACCESS_LOG] = "1" if access_log else ""
