# The Papyrus API server. docker-compose.yml runs it next to PostgreSQL and the PowerSync service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py ./
COPY src ./src
# The server and its dependencies (the `server` extra). The image runs no Python client, so the
# PowerSync core extension (from node-sdk/, not in the build context) is left out.
RUN PAPYRUS_WITHOUT_CORE_EXTENSION=1 pip install '.[server]'

# An unprivileged user; /keys and /data are volumes it owns (keys are created with mode 0600).
RUN useradd --system --uid 10001 --home-dir /app papyrus \
    && mkdir -p /keys /data \
    && chown papyrus /keys /data \
    && chmod 0700 /keys /data
USER papyrus

ENV PAPYRUS_ENV=production \
    DATA_DIR=/data
EXPOSE 8080
CMD ["papyrus", "serve", "--host", "0.0.0.0", "--port", "8080"]
