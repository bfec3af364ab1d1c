FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-cache-dir '.[ops]'
RUN useradd --create-home astria
USER astria
CMD ["celery", "-A", "worker", "worker", "-c", "8", "--loglevel", "INFO"]
