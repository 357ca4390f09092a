# One image for the API, the worker and the one-shot Temporal setup (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md worker.py alembic.ini ./
COPY signbridge ./signbridge
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY connectors ./connectors
COPY store ./store
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 10001 signbridge \
    && mkdir -p /data && chown signbridge /data && chmod 700 /data

USER signbridge
ENV SIGNBRIDGE_DATA_DIR=/data
VOLUME ["/data"]
# 8000: the API (uvicorn); 9464: the worker's Temporal runtime metrics (Prometheus).
EXPOSE 8000 9464
# SIGTERM lets the worker drain running activities (signbridge/core/shutdown.py) and uvicorn finish requests.
STOPSIGNAL SIGTERM
CMD ["signbridge", "api", "--host", "0.0.0.0"]
