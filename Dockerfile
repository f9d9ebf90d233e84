# syntax=docker/dockerfile:1
# Multi-stage: build both binaries once, ship each in a small distroless image as non-root.
#   docker build --target cognito-authz -t cognito-authz .
#   docker build --target app -t cruddur-app .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Only the shipped packages: the bench crate would enable the testkit feature.
RUN cargo build --release --locked -p cognito-authz -p cruddur-demo --bins

# cognito-authz: gRPC on 9001 (Envoy's Check, health, reflection, diagnostics), admin on 9002.
FROM gcr.io/distroless/cc-debian12:nonroot AS cognito-authz
COPY --from=build /src/target/release/cognito-authz /usr/local/bin/cognito-authz
USER nonroot
# The binary defaults to loopback (a sidecar shares Envoy's host); a container's loopback is its
# own, so the image listens on every interface and the network decides who reaches it.
# The admin port serves /metrics, /healthz and /readyz to probes and scrapers; its control API
# (/revocations, /config) stays off until AUTHZ_ADMIN_TOKEN_FILE names a mounted secret
# (Kubernetes: a Secret volume; compose: the shared volume; ECS: AUTHZ_ADMIN_TOKEN from the
# task's secrets).
ENV AUTHZ_GRPC_ADDR=0.0.0.0:9001 AUTHZ_ADMIN_ADDR=0.0.0.0:9002
EXPOSE 9001 9002
ENTRYPOINT ["/usr/local/bin/cognito-authz"]
CMD ["serve"]

# The demo upstream.
FROM gcr.io/distroless/cc-debian12:nonroot AS app
COPY --from=build /src/target/release/cruddur-app /usr/local/bin/cruddur-app
USER nonroot
ENV BIND=0.0.0.0 PORT=8000
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/cruddur-app"]
