# syntax=docker/dockerfile:1
# Multi-stage: build both binaries and the dynamic module once, ship each in a small distroless
# image as non-root.
#   docker build --target cognito-authz -t cognito-authz .
#   docker build --target app -t cruddur-app .
#   docker build --target envoy-module -t cognito-authz-envoy .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Only the shipped packages: the bench crate would enable the testkit feature.
RUN cargo build --release --locked -p cognito-authz -p cruddur-demo --bins
# The dynamic module beside them. Built on Debian 12 (glibc 2.36), the glibc of the distroless
# Envoy image it runs in (gcr.io/distroless/base-nossl-debian12): a .so built on a newer glibc
# would need symbols that image lacks and fail to load. That image has no libgcc_s, which Rust's
# unwinding needs, so the module carries its own copy and finds it beside itself ($ORIGIN).
RUN cargo rustc --release --locked -p cognito-authz-envoy --lib --crate-type cdylib \
      -- -C 'link-arg=-Wl,-rpath,$ORIGIN' \
 && mkdir -p /out/modules \
 && cp target/release/libcognito_authz_envoy.so "$(gcc -print-file-name=libgcc_s.so.1)" /out/modules/

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

# Envoy 1.40 with cognito-authz inside it as a dynamic module (ABI v0.2.0: the module is built
# for this Envoy minor version only). Envoy's own distroless image, whose glibc (Debian 12's) the
# build stage matches. Kubernetes (deploy/kubernetes/module.yaml) and Envoy Gateway
# (deploy/envoy-gateway/module.yaml) run this image; the module is found by name through the
# search path, or by its path.
FROM envoyproxy/envoy:distroless-v1.40.0 AS envoy-module
COPY --from=build /out/modules/ /usr/local/lib/envoy/modules/
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/envoy/modules
USER nonroot
