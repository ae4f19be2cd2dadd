# Air-gap stand-in for the official python:<ver>-slim-<suite> image, built only by
# docker/airgap/build-bases.sh when no registry is reachable. It is Debian's own
# python3 (3.11 in bookworm) + pip + venv on a debootstrap minbase that already
# trusts the extra CAs. The project Dockerfiles only rely on what both this image and
# the official one provide: `python`/`python3`, `pip`, the venv module, apt, and
# PATH/LANG defaults.
ARG BASE=cartflow-airgap/debian:bookworm
FROM ${BASE}
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3; \
    # The official image lets `pip install` into the system interpreter; PEP 668's
    # marker would make the same Dockerfile fail here, so drop it (build-time base only).
    rm -f /usr/lib/python3*/EXTERNALLY-MANAGED; \
    ln -sf /usr/bin/pip3 /usr/local/bin/pip; \
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    python --version; pip --version
CMD ["python3"]
