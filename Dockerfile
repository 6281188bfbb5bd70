# syntax=docker/dockerfile:1
# The `tally` node image: built from this workspace in a Rust image, run from a distroless
# base (glibc and libgcc, no shell, no package manager) as the non-root user 65532.
#
#   docker build -t tally:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9080:9080/udp -v tally-data:/var/lib/tally tally:0.1.0 \
#     run --listen 0.0.0.0:8080
#
# Without arguments the container serves the embedded default poll on 0.0.0.0:8080 with its
# log in /var/lib/tally; mount a config at /etc/tally/tally.toml for anything else (see
# deploy/kubernetes/ and OPERATIONS.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and the build directory between builds, so a source
# change rebuilds only the workspace crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tally --bin tally \
    && install -D -m 0755 target/release/tally /out/tally \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tally" \
      org.opencontainers.image.description="Tally regional node: real-time vote counting, exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tally /usr/local/bin/tally
COPY --from=build --chown=65532:65532 /out/data /var/lib/tally
USER 65532:65532
ENV TALLY_DATA_DIR=/var/lib/tally \
    TALLY_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/tally"]
# 8080/tcp: HTTP API, SSE, dashboard, /metrics, probes. 9080/udp: QUIC peer sync.
EXPOSE 8080/tcp 9080/udp
# SIGTERM drains requests, fsyncs the log and says goodbye to peers (shutdown_drain_ms).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["run"]
