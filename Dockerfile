# userprofile-service container: the standard-library HTTP server plus the Couchbase SDK.
# Build:  make image   (tools/image.sh: podman or docker; it tags and labels the image with pyproject.toml's
#         version, as `docker build --build-arg VERSION=<version> -t userprofile-service:<version> .` does)
# All configuration is environment variables: COUCHBASE_HOST, COUCHBASE_USER,
# COUCHBASE_PASSWORD, COUCHBASE_BUCKET, COUCHBASE_SCOPE, COUCHBASE_TLS, COUCHBASE_NETWORK,
# USERPROFILE_DB, SERVICE_HOST, SERVICE_PORT, ACCESS_LOG, WORKERS, SHUTDOWN_GRACE_SECONDS...

# Pinned by version, so a rebuild gets the same interpreter: CPython 3.13 on Debian 13 (trixie).
# The code runs on 3.11 and later (make test runs the suite on 3.11 and 3.13). The couchbase SDK
# ships manylinux wheels for CPython 3.11 to 3.14, so unlike the blog's image no compiler or apt
# packages are needed.
FROM python:3.13.16-slim-trixie

# No .pyc writes at run time (the root filesystem is read-only in Kubernetes; the code is
# byte-compiled below instead), unbuffered logs, and pip without caches or version nags.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer, before the code: editing the code does not reinstall them.
# --build-arg TRACING=true adds the optional OpenTelemetry export (docs/tracing.md).
ARG TRACING=false
COPY requirements.txt requirements-tracing.txt ./
RUN pip install --no-cache-dir --root-user-action=ignore -r requirements.txt \
    && if [ "$TRACING" = true ]; then pip install --no-cache-dir --root-user-action=ignore -r requirements-tracing.txt; fi

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
# /data is the only writable place the service needs: the embedded SQLite store, when no
# Couchbase is configured (mount a volume or an emptyDir there).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data

# The code, owned by root and so read-only to the service user; compiled once here.
# A glob, so every top-level module is included as the code is split up; pyproject.toml
# declares the version the service reports (buildinfo.py).
COPY *.py openapi.json pyproject.toml ./
RUN python -m compileall -q /app

# The version is pyproject.toml's, passed in by tools/image.sh (tests/test_image.py checks the label).
ARG VERSION=unknown
LABEL org.opencontainers.image.title="userprofile-service" \
      org.opencontainers.image.description="User-profile lookups over HTTP in front of Couchbase or SQLite" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

ENV SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=8080 \
    USERPROFILE_DB=/data/userprofile.db

USER 10001:10001
EXPOSE 8080

# Liveness with what the image already has (python's urllib; no curl in slim images).
# urlopen raises on a refused connection or a non-2xx answer, which exits 1: unhealthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVICE_PORT', '8080') + '/healthz', timeout=2)"]

# Exec form: the service is PID 1 and receives SIGTERM itself, so it drains in-flight requests.
CMD ["python3", "userprofile_service.py"]
