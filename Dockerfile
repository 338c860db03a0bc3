# handoff running examples/hello, as a container image.
#
#   docker build -t handoff-hello .
#   docker run --rm -p 8080:8080 -p 9100:9100 handoff-hello
#
# handoff is pid 1: it binds 0.0.0.0:8080 once, runs one hello worker per
# CPU the container may use (GOMAXPROCS honours a CPU quota), reaps
# orphans, reloads on SIGHUP or 'handoff reload' (docker exec), and
# drains on SIGTERM. See examples/docker/README.md for the run options
# (stop timeout, read-only root) and examples/kubernetes/ for a cluster.
#
# No '# syntax=' line: that makes BuildKit pull a frontend image from
# Docker Hub, which an offline builder cannot. Nothing here needs more
# than the built-in frontend.

# GO_VERSION follows the go line of go.mod (the image test checks this).
ARG GO_VERSION=1.26

# The build stage runs on the builder's own platform and cross-compiles
# (CGO_ENABLED=0 needs no C toolchain), so a multi-platform build
# (docker buildx build --platform linux/amd64,linux/arm64) runs no emulator.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# out/rootfs is the whole runtime filesystem, copied over the empty base
# in one COPY: static binaries, an /etc/passwd naming the numeric user,
# CA certificates for apps that make TLS calls, and /tmp (mode 1777),
# where the master makes its per-worker notify sockets and, by default,
# its control socket (/tmp/handoff-65532/handoff.sock).
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
        go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
        -o out/rootfs/usr/local/bin/ . ./examples/hello \
    && mkdir -p out/rootfs/etc/ssl/certs \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > out/rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > out/rootfs/etc/group \
    && cp /etc/ssl/certs/ca-certificates.crt out/rootfs/etc/ssl/certs/ \
    && mkdir -p -m 1777 out/rootfs/tmp

# The runtime stage: nothing but out/rootfs. No shell, no libc: handoff
# and its workers need none (the master starts each worker by re-running
# its own binary through /proc/self/exe, which then execs the command).
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="handoff-hello" \
      org.opencontainers.image.description="examples/hello served by handoff: zero-downtime reloads inside one container" \
      org.opencontainers.image.source="https://github.com/handoff-dev/handoff" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION"
COPY --from=build /src/out/rootfs/ /
# So that 'docker exec NAME handoff status' and 'kubectl exec POD --
# handoff reload --wait' find the binary whatever the builder's defaults.
ENV PATH=/usr/local/bin
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd
# lookup.
USER 65532:65532
EXPOSE 8080 9100
# handoff drains its workers on SIGTERM (Docker's default too; named so
# that nobody changes it to a signal handoff does not drain on).
STOPSIGNAL SIGTERM
# No HEALTHCHECK: there is no curl or shell in the image, Kubernetes and
# Nomad ignore it (they probe /readyz and /healthz on the admin port), and
# 'handoff status' says that the master answers, not that a generation
# serves. Compose users can add one: see examples/docker/README.md.
ENTRYPOINT ["/usr/local/bin/handoff", "run"]
# The flags, kept apart from ENTRYPOINT so that an orchestrator replaces
# them alone (Kubernetes 'args:', Nomad 'args'), e.g. with
# --config /etc/handoff/handoff.hcl. --drain-timeout 8s fits Docker's
# default 10 s between SIGTERM and SIGKILL (docker stop -t, or
# --stop-timeout, for longer drains); hello's own drain limit is below it,
# so hello finishes by itself rather than being killed.
CMD ["--listen", "http=tcp://0.0.0.0:8080", \
     "--admin", "0.0.0.0:9100", \
     "--drain-timeout", "8s", \
     "--", "/usr/local/bin/hello", "-drain", "7s"]
