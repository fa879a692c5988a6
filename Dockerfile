# syntax=docker/dockerfile:1

# Build stage: static binaries for the warren CLI and the examples.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build

WORKDIR /src

# Module downloads in their own layer: rebuilt only when go.mod / go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .

ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out \
 && go build -trimpath -ldflags="-s -w" -o /out/warren ./cmd/warren \
 && go build -trimpath -ldflags="-s -w" -o /out/orders ./examples/orders

# Final stage: no shell, no package manager, runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=build /out/warren /warren
COPY --from=build /out/orders /orders

USER nonroot:nonroot
# Health (WARREN_HEALTH_ADDR) and metrics (WARREN_METRICS_ADDR) listeners.
EXPOSE 8080 9090

ENTRYPOINT ["/warren"]
