# Air-gap stand-in for ministackorg/ministack:<version>, built from the PyPI release by
# docker/airgap/build-bases.sh only when that image cannot be pulled. It mirrors what
# the upstream image offers the compose file: `python -m ministack` on port 4566, the
# LocalStack-style init dirs, and an interpreter with botocore + PyYAML for ready.d
# hooks (both are ministack dependencies).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG MINISTACK_VERSION
RUN set -eux; \
    test -n "${MINISTACK_VERSION}"; \
    python -m venv /opt/ministack-venv; \
    /opt/ministack-venv/bin/pip install --no-cache-dir --no-compile "ministack==${MINISTACK_VERSION}"; \
    find /opt/ministack-venv -name __pycache__ -prune -exec rm -rf {} +; \
    mkdir -p /docker-entrypoint-initaws.d/ready.d /etc/localstack/init/boot.d \
             /etc/localstack/init/ready.d /tmp/ministack-data/s3
ENV PATH=/opt/ministack-venv/bin:$PATH \
    MINISTACK_VERSION=${MINISTACK_VERSION} \
    GATEWAY_PORT=4566 \
    S3_DATA_DIR=/tmp/ministack-data/s3 \
    LAMBDA_EXECUTOR=local \
    PYTHONUNBUFFERED=1
WORKDIR /opt/ministack
EXPOSE 4566
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request as r; r.urlopen('http://localhost:4566/_ministack/health')" || exit 1
ENTRYPOINT ["python", "-m", "ministack"]
