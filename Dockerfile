# syntax=docker/dockerfile:1
#
# lastevent: one static binary on distroless, run as a numeric non-root user,
# configured only through LASTEVENT_* variables. It writes nothing to disk, so
# it runs with a read-only root filesystem.
#
#   docker build --build-arg VERSION=1.2.3 --build-arg REVISION="$(git rev-parse HEAD)" -t lastevent:1.2.3 .
#   docker run --rm -p 8080:8080 -p 8081:8081 --read-only \
#     -e LASTEVENT_UPSTREAM_URL=http://host.docker.internal:9000 lastevent:1.2.3
#
# test/image_test.go reads this file: it checks the rules below and runs the
# `go build` line of the build stage as written (ARGs substituted), so keep
# that RUN a single command. Pin both images by digest in your own builds.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
ARG TARGETOS
ARG TARGETARCH
# Static (no libc: distroless static has none), reproducible paths, stripped,
# version and revision stamped for `lastevent -version`.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION -X main.revision=$REVISION" -o /out/lastevent .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lastevent" \
      org.opencontainers.image.description="Reverse proxy that makes the Server-Sent Events streams of an unchanged upstream resumable" \
      org.opencontainers.image.source="https://github.com/lastevent/lastevent" \
      org.opencontainers.image.url="https://github.com/lastevent/lastevent" \
      org.opencontainers.image.documentation="https://github.com/lastevent/lastevent#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/lastevent /lastevent
# Numeric, so that the kubelet can verify runAsNonRoot (it refuses a named user).
USER 65532:65532
# Clients (LASTEVENT_LISTEN_ADDR) and admin: /healthz, /readyz, /metrics, POST /drain (LASTEVENT_ADMIN_ADDR).
EXPOSE 8080 8081
# Exec form: lastevent is PID 1 and gets SIGTERM itself, drains and exits
# within LASTEVENT_SHUTDOWN_GRACE. No HEALTHCHECK: the kubelet probes /healthz
# and /readyz on the admin port (and distroless has no shell or curl anyway).
ENTRYPOINT ["/lastevent"]
