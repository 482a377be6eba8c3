# sipcast on Debian 12 with GStreamer 1.22.
# Build: docker build -t sipcast .   Run: docker run --network host sipcast
FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh run
COPY . .
RUN cargo build --release --locked --bin sipcast

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav glib-networking ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sipcast
COPY --from=build /src/target/release/sipcast /usr/local/bin/sipcast
COPY pipelines pipelines
COPY config config
# REST API and SIP; RTP uses media.rtp_port_min..rtp_port_max (20000-29999 by default).
EXPOSE 8081/tcp 5060/udp
ENTRYPOINT ["/usr/local/bin/sipcast"]
CMD ["--config", "config/sipcast.toml"]
