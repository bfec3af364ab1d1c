# The runtime image: the worker, the receiver and the CLI; nothing for local testing.
FROM python:3.11-slim AS runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-cache-dir '.[ops,server]'
RUN useradd --create-home astria
USER astria
CMD ["celery", "-A", "worker", "worker", "-c", "2", "--loglevel", "INFO"]

# The same, plus the Astria simulator (compose profile `local`).
FROM runtime AS local
USER root
COPY astria_local ./astria_local
RUN pip install --no-cache-dir '.[ops,server]'
USER astria
