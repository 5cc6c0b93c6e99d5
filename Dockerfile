# syntax=docker/dockerfile:1
# Multi-stage build of svcnet-controller, svcnet-proxy, svcnet-dns and the svcnet CLI.
# (It cannot be built on the project's CI machines, which have no Docker engine; keep it correct by inspection.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p svcnet-controllers --bin svcnet-controller \
      -p svcnet-dataplane --bin svcnet-proxy \
      -p svcnet-dns --bin svcnet-dns \
      -p svcnet-cli --bin svcnet \
 && mkdir -p /out \
 && cp target/release/svcnet-controller target/release/svcnet-proxy target/release/svcnet-dns \
       target/release/svcnet /out/

# The proxy needs nft and conntrack at run time; the controller and svcnet-dns need nothing but libc.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables conntrack ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/svcnet"]
