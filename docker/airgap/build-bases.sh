#!/usr/bin/env bash
# Build the images our Dockerfiles and docker-compose.yml start FROM, out of Debian
# packages and PyPI, for machines where no image registry is reachable.
#
#   docker/airgap/build-bases.sh [--ca-dir DIR] [--force] [--no-pull]
#
# What it does, per image, skipping any image that already exists (idempotent; a
# re-run with everything present takes about a second):
#   * every `FROM` of services/Dockerfile and spark/Dockerfile (e.g.
#     python:3.11-slim-bookworm, golang:1.26.8-bookworm): try `docker pull`; if that
#     fails, build a stand-in from `debootstrap --variant=minbase <suite>` + `docker
#     import`, with the extra CA certificates added (golang: + that Go release, fetched
#     by the host's `go` as GOTOOLCHAIN does), and tag it with EXACTLY the name the
#     Dockerfile uses;
#   * the emulator image named in .env (MINISTACK_IMAGE, e.g.
#     ministackorg/ministack:1.5.33): try `docker pull`; if that fails, build it from
#     `pip install ministack==<tag>` (docker/airgap/ministack.Dockerfile).
# The project Dockerfiles are never edited for this: a user with a registry builds the
# very same files against the official bases.
#
# Environment: DOCKER (client binary; default: the Debian client that matches the
# engine), GO (the host's go, for the golang stand-in; default: go on PATH),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), AIRGAP_CACHE (debootstrap
# rootfs tarball cache; default /var/cache/cartflow-airgap).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/docker/airgap"
CA_DIR="/usr/local/share/ca-certificates"
FORCE=0
TRY_PULL=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ca-dir) CA_DIR="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-pull) TRY_PULL=0; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

# A newer client may sit earlier on PATH than the Debian one that matches the engine.
if [[ -z "${DOCKER:-}" ]]; then
    if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${AIRGAP_CACHE:-/var/cache/cartflow-airgap}"
LABEL="org.cartflow.airgap=1"

log() { printf '[airgap] %s\n' "$*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# Pull first: where a registry is reachable the official image is the right answer.
# No registry usually fails in well under a second (DNS); cap it anyway.
try_pull() {
    [[ $TRY_PULL == 1 ]] || return 1
    log "trying: docker pull $1"
    timeout 120 "$DOCKER" pull -q "$1" >/dev/null 2>&1
}

# Extra CAs go into every base: outbound HTTPS (pip, Maven) is intercepted here.
ca_files() {
    shopt -s nullglob
    local f
    for f in "$CA_DIR"/*.crt; do printf '%s\n' "$f"; done
    shopt -u nullglob
}

# Debian minbase with the extra CAs; `cartflow-airgap/debian:<suite>` (a local-only
# name) and, when asked for, the Dockerfile's own debian:<suite>[-slim] name.
build_debian() {
    local suite="$1" tag="cartflow-airgap/debian:$1"
    if have_image "$tag" && [[ $FORCE == 0 ]]; then return 0; fi
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
    mkdir -p "$CACHE"
    local tarball="$CACHE/debian-$suite-minbase.tar"
    if [[ ! -s "$tarball" || $FORCE == 1 ]]; then
        local rootfs
        rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
        # shellcheck disable=SC2064  # expand now: the trap must remove this rootfs
        trap "rm -rf '$rootfs'" EXIT
        log "debootstrap --variant=minbase $suite (about a minute)"
        debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$MIRROR" >/dev/null
        # Same apt sources as the official images, so security fixes are installable.
        cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $suite main
deb $MIRROR $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
        # Like debian:*-slim: no docs/man/locales from later apt installs (smaller images).
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
        # Keep apt lean in containers (no recommends, no cached .debs).
        cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
        local f n=0
        while IFS= read -r f; do
            cp "$f" "$rootfs/usr/local/share/ca-certificates/"; n=$((n + 1))
        done < <(ca_files)
        chroot "$rootfs" update-ca-certificates >/dev/null
        log "added $n extra CA certificate(s) from $CA_DIR"
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
               "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"; trap - EXIT
    fi
    log "docker import -> $tag"
    "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $LABEL" \
        --change 'CMD ["bash"]' \
        "$tarball" "$tag" >/dev/null
}

build_python() {
    local name="$1" pyver="$2" suite="$3"
    build_debian "$suite"
    local ctx
    ctx="$(mktemp -d)"
    cp "$HERE/python.Dockerfile" "$ctx/Dockerfile"
    log "docker build $name (Debian python3 of $suite stands in for Python $pyver)"
    "$DOCKER" build -q --build-arg "BASE=cartflow-airgap/debian:$suite" --label "$LABEL" \
        -t "$name" "$ctx" >/dev/null
    rm -rf "$ctx"
    local got
    got="$("$DOCKER" run --rm "$name" python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$got" != "$pyver" ]]; then
        log "WARNING: $name has Python $got, the tag says $pyver (Debian $suite ships $got)"
    fi
}

# golang:<ver>-<suite>: Debian minbase + exactly that Go release. The host's `go` gets it
# the way GOTOOLCHAIN=go<ver> does (the golang.org/toolchain module from the Go module
# proxy, checked against sum.golang.org; the host's own GOROOT if it already is <ver>).
build_golang() {
    local name="$1" gover="$2" suite="$3"
    # The official tarball's place when go is not on PATH (non-login CI shells).
    local go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
    [[ -x "$go" ]] || { log "go missing (GO=...): the $name stand-in takes its Go release from the host's go (1.21+)"; exit 1; }
    build_debian "$suite"
    local goroot got
    goroot="$(GOTOOLCHAIN="go$gover" GOFLAGS='' "$go" env GOROOT)" || { log "could not get Go $gover through $go"; exit 1; }
    got="$("$goroot/bin/go" env GOVERSION)"
    [[ "$got" == "go$gover" ]] || { log "$goroot holds $got, not go$gover"; exit 1; }
    log "docker build $name (Go $gover from $goroot)"
    # The context streams from tar: the Dockerfile + that GOROOT, nothing copied to disk.
    tar -cf - -C "$HERE" --transform 's,^golang\.Dockerfile$,Dockerfile,' golang.Dockerfile \
        -C "$(dirname "$goroot")" "$(basename "$goroot")" |
        "$DOCKER" build -q --build-arg "BASE=cartflow-airgap/debian:$suite" \
            --build-arg "GOROOT_DIR=$(basename "$goroot")" --label "$LABEL" -t "$name" - >/dev/null
}

build_base() {
    local name="$1"
    if [[ "$name" =~ ^python:([0-9]+\.[0-9]+)-slim-([a-z]+)$ ]]; then
        build_python "$name" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ "$name" =~ ^golang:([0-9]+\.[0-9]+\.[0-9]+)-([a-z]+)$ ]]; then
        build_golang "$name" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ "$name" =~ ^debian:([a-z]+)(-slim)?$ ]]; then
        build_debian "${BASH_REMATCH[1]}"
        "$DOCKER" tag "cartflow-airgap/debian:${BASH_REMATCH[1]}" "$name"
    else
        log "no air-gap recipe for base image '$name'"; exit 1
    fi
}

# FROM lines of our Dockerfiles, minus references to earlier stages and ARG-built names.
dockerfile_bases() {
    awk '
        toupper($1) == "FROM" {
            img = ""; for (i = 2; i <= NF; i++) if ($i !~ /^--/) { img = $i; break }
            if (toupper($(NF-1)) == "AS") stage[tolower($NF)] = 1
            if (img != "" && !(tolower(img) in stage) && img !~ /\$/) print img
        }' "$@" | sort -u
}

# The emulator image name compose will use: env var, else .env, else the default.
emulator_image() {
    if [[ -n "${MINISTACK_IMAGE:-}" ]]; then echo "$MINISTACK_IMAGE"; return; fi
    local v=""
    [[ -f "$ROOT/.env" ]] && v="$(sed -n 's/^MINISTACK_IMAGE=//p' "$ROOT/.env" | tail -n1)"
    echo "${v:-ministackorg/ministack:1.5.33}"
}

start=$SECONDS
mapfile -t BASES < <(dockerfile_bases "$ROOT/services/Dockerfile" "$ROOT/spark/Dockerfile")
for img in "${BASES[@]}"; do
    if have_image "$img" && [[ $FORCE == 0 ]]; then log "have $img"; continue; fi
    if [[ $FORCE == 0 ]] && try_pull "$img"; then log "pulled $img"; continue; fi
    build_base "$img"
    log "built $img"
done

EMU="$(emulator_image)"
if have_image "$EMU" && [[ $FORCE == 0 ]]; then
    log "have $EMU"
elif [[ $FORCE == 0 ]] && try_pull "$EMU"; then
    log "pulled $EMU"
else
    version="${EMU##*:}"
    [[ "$version" =~ ^[0-9]+(\.[0-9]+)*$ ]] || { log "emulator tag '$version' is not a PyPI version"; exit 1; }
    pybase="python:3.11-slim-bookworm"
    have_image "$pybase" || build_base "$pybase"
    log "docker build $EMU from PyPI ministack==$version"
    "$DOCKER" build -q --build-arg "BASE=$pybase" --build-arg "MINISTACK_VERSION=$version" \
        --label "$LABEL" -t "$EMU" -f "$HERE/ministack.Dockerfile" "$HERE" >/dev/null
    log "built $EMU"
fi
log "bases ready in $((SECONDS - start)) s"
