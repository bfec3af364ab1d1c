# The runtime image: the worker, the receiver, the API and the CLI; nothing for local testing.
FROM python:3.11-slim AS runtime
WORKDIR /app
# Dependencies first, from the tested versions: a change to the source reuses this layer.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p worker tasks && touch worker/__init__.py tasks/__init__.py \
    && pip install --no-cache-dir -c constraints.txt '.[ops,server,s3]' \
    && pip uninstall -y astria-queue
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-cache-dir --no-deps '.[ops,server,s3]'
# A numeric user, so that runAsNonRoot can check it; nothing is written to the image at run time.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin astria
USER 10001
# Redis answers (no Astria request is spent on a health check).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["python", "-c", "from worker.runtime import runtime; runtime().redis.ping()"]
CMD ["celery", "-A", "worker", "worker", "-c", "2", "--loglevel", "INFO"]

# The same, plus the Astria simulator (compose profile `local`).
FROM runtime AS local
USER root
COPY astria_local ./astria_local
RUN pip install --no-cache-dir --no-deps '.[ops,server,s3]'
USER 10001
