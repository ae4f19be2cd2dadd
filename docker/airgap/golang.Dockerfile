# Air-gap stand-in for the official golang:<ver>-<suite> image, built only by
# docker/airgap/build-bases.sh when no registry is reachable. The Go release is the
# golang.org/toolchain module of exactly that version (what GOTOOLCHAIN downloads, checked
# against sum.golang.org), or the host's own GOROOT when that already is the version. The
# project Dockerfiles only rely on what both this image and the official one provide: `go`
# on PATH, GOPATH=/go, GOTOOLCHAIN=local, CA certificates for the module proxy.
ARG BASE=cartflow-airgap/debian:bookworm
FROM ${BASE}
ARG GOROOT_DIR=go
COPY ${GOROOT_DIR} /usr/local/go
ENV GOPATH=/go \
    GOTOOLCHAIN=local \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN set -eux; mkdir -p /go/bin /go/src; go version
WORKDIR /go
CMD ["bash"]
