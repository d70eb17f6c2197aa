# dlr-poller container image for the Kubernetes CronJob (examples/kubernetes/cronjob.yaml).
# Not built in CI: the CI machines have no container engine. Build with `docker build -t dlr-poller .`.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
# The workspace names the sandbox crate (a dev-dependency of the tests): cargo reads its manifest, never builds it here.
COPY sandbox ./sandbox
COPY schema.sql ./
RUN cargo build --release --locked --bin dlr-poller

FROM debian:bookworm-slim
# CA certificates are not needed by rustls (it carries its own roots) but help operators debugging from the image.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 dlr-poller && useradd --uid 10001 --gid 10001 --no-create-home dlr-poller
COPY --from=build /src/target/release/dlr-poller /usr/local/bin/dlr-poller
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/dlr-poller"]
CMD ["--help"]
