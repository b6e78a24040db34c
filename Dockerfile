# pharos's image: the server and CLI (`pharos`), the example learner (`pharos-sgd`) and
# the example inference replica (`pharos-replica`). What `pharos k8s manifests` runs.
#
#   docker build -t pharos:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pharos -p pharos-workloads --bins

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pharos /src/target/release/pharos-sgd \
    /src/target/release/pharos-replica /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["pharos"]
