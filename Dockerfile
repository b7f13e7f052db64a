# syntax=docker/dockerfile:1
#
# The fleetpack image: fleetpack-origin (the entrypoint) and fleetpack-seed, on a
# distroless base, running as the non-root user 65532. Needs BuildKit (the default
# builder of current Docker) for the cache mounts.
#
#   docker build -t fleetpack .
#   docker run --rm -p 8080:8080 fleetpack --demo      # local store in /data, demo fleet
#   curl 'http://127.0.0.1:8080/package?cpuArch=armv8&payloadType=metadataOnly'
#
#   # the AWS store, as the CloudFormation template runs it
#   docker run --rm -p 8080:8080 -e FLEETPACK_STORE=aws -e FLEETPACK_TABLE=ota-rules \
#     -e FLEETPACK_BUCKET=ota-binaries -e AWS_REGION=eu-west-1 fleetpack
#
#   # the operator tool from the same image
#   docker run --rm --entrypoint fleetpack-seed fleetpack --help
#
# For an ARM64 (Graviton) image: docker build --platform linux/arm64 -t fleetpack .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The whole workspace: the root manifest names the tests and benches, so cargo needs
# them to load it. .dockerignore keeps target/, .tools/, data and .git out.
COPY . .
# Registry and target directory live in BuildKit caches, so a rebuild after a source
# change recompiles only the workspace crates. The target cache is not in the image:
# the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fleetpack-origin -p fleetpack-seed \
    && mkdir -p /out/bin /out/data \
    && cp target/release/fleetpack-origin target/release/fleetpack-seed /out/bin/

# glibc, libgcc and CA certificates, no shell; "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# The local store's directory, writable by the non-root user (for --demo and
# `fleetpack-seed` on the local store). Unused with FLEETPACK_STORE=aws.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENV FLEETPACK_LISTEN=0.0.0.0:8080 \
    FLEETPACK_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fleetpack-origin"]
