# weft's container image: the agent, the CNI plugin, weftctl and the
# install-cni helper on Debian 12 with iptables (nft backend).
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t weft.dev/weft:dev .
# `make image` builds the same layout without a container engine
# (deploy/image); the DaemonSet in deploy/ runs either.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
ARG VERSION=
RUN go build -trimpath -ldflags "-X weft.dev/weft/cmd/internal/version.Version=${VERSION}" -o /out/ ./cmd/weft ./cmd/weft-agent ./cmd/weftctl ./cmd/weft-install

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates containernetworking-plugins \
 && update-alternatives --set iptables /usr/sbin/iptables-nft \
 && update-alternatives --set ip6tables /usr/sbin/ip6tables-nft \
 && mkdir -p /usr/lib/weft/cni \
 && cp /usr/lib/cni/loopback /usr/lib/weft/cni/loopback \
 && apt-get purge -y containernetworking-plugins \
 && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
COPY --from=build /out/weft-agent /out/weftctl /out/weft-install /usr/local/bin/
COPY --from=build /out/weft /usr/lib/weft/cni/weft
LABEL org.opencontainers.image.title=weft \
      org.opencontainers.image.description="weft Kubernetes overlay network: agent, CNI plugin, weftctl"
ENTRYPOINT ["/usr/local/bin/weft-agent"]
