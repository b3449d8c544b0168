# syntax=docker/dockerfile:1
# tokend image: built in a full Rust image, run from a distroless one as a non-root
# user. The runtime image has no shell and no curl: `tokend healthcheck` is the check.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo loads every target the manifest declares before building any one of them, so
# the bench sources must be here even though the image builds only the binary.
COPY benches ./benches
# The cache mounts keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tokend \
    && cp target/release/tokend /tokend
# The keyring volume's mount point; copied below owned by the runtime user (distroless
# nonroot, uid 65532), so that a fresh named volume is writable by it.
RUN mkdir -p /out/var/lib/tokend

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tokend /usr/local/bin/tokend
COPY --from=build --chown=65532:65532 /out/var/lib/tokend /var/lib/tokend
USER 65532:65532
ENV TOKEND_LISTEN=0.0.0.0:8080 \
    TOKEND_METRICS_LISTEN=0.0.0.0:9091 \
    TOKEND_LOG_FORMAT=json
EXPOSE 8080 9091
VOLUME ["/var/lib/tokend"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tokend", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tokend"]
CMD ["serve"]
