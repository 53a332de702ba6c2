# syntax=docker/dockerfile:1
# The runner as a container image, built from this repository:
#
#   docker build -t runner .
#   docker run -d --name runner -p 8080:8080 -p 127.0.0.1:9095:9095 \
#     -v runner-data:/var/lib/runner runner --tenants 10
#
# Two stages: the `dist` build in the Rust image, then the binary alone in a
# slim Debian of the same release, so it runs against the C library it was
# linked with. It runs as user 10001, listens on 0.0.0.0 (8080 for tenants,
# 9095 for /metrics, /healthz, /readyz and the admin API), and keeps its
# key-value data and compiled components in the volume /var/lib/runner.
# Arguments after the image name are the runner's (`--help`, `tenant ...`);
# every setting is also a RUNNER_* variable (`-e RUNNER_STORE=redis://...`).

# Must equal rust-toolchain.toml's channel (a system test checks it).
ARG RUST_VERSION=1.95.0
# The builder's and the runtime's Debian release: one value, so they match.
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG RUST_VERSION
# The image's own toolchain (the version rust-toolchain.toml names) rather
# than the file's, which would also fetch clippy and rustfmt on every build.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION}
# runner/build.rs builds the guest components (guest/, Rust only) for
# wasm32-wasip2 and embeds the default one: the runner needs no other
# toolchain. jemalloc's C build needs make and cc, which this image has.
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The crate registry and the target directory (host and guest builds) are
# cache mounts, kept between builds: after a source change only what
# changed is compiled. The binary leaves the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist -p runner --locked \
 && cp target/dist/runner /usr/local/bin/runner

FROM debian:${DEBIAN_RELEASE}-slim
# The certificate store: `rediss://` checks the Redis server against it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed UID and GID, so a bind-mounted data directory can be given to it
# (chown 10001:10001 DIR). The volume's directory is the user's alone: the
# compiled-component cache in it is loaded as native code.
RUN groupadd --system --gid 10001 runner \
 && useradd --system --uid 10001 --gid runner --no-create-home \
      --home-dir /var/lib/runner --shell /usr/sbin/nologin runner \
 && install -d -o runner -g runner -m 0700 /var/lib/runner
COPY --from=build /usr/local/bin/runner /usr/local/bin/runner
USER 10001:10001
# Inside a container the listeners must take connections from outside the
# container's own loopback; publish 9095 only where the admin API belongs
# (it is plain HTTP). Key-value data is kept on disk, so a restart keeps it;
# RUNNER_DATA_DIR=none keeps it in memory, and Redis (RUNNER_STORE) needs
# that, as the runner refuses a data directory beside a Redis URL.
ENV RUNNER_LISTEN=0.0.0.0:8080 \
    RUNNER_METRICS_LISTEN=0.0.0.0:9095 \
    RUNNER_DATA_DIR=/var/lib/runner/data \
    RUNNER_CACHE_DIR=/var/lib/runner/cache
VOLUME /var/lib/runner
EXPOSE 8080 9095
# SIGTERM drains: no new connections, in-flight requests get
# --shutdown-timeout (10s) to finish; `docker stop` waits 10s by default,
# so give it more (-t 15) if the timeout is raised.
STOPSIGNAL SIGTERM
# Alive: GET /healthz on the admin listener, with bash's /dev/tcp, as the
# image has no HTTP client. It dials the port of RUNNER_METRICS_LISTEN on
# loopback: move that listener with the variable, not the flag.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${RUNNER_METRICS_LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/runner"]
