# syntax=docker/dockerfile:1
# One image for the operator and the node agent (the chart chooses the command):
#   docker build -t REGISTRY/netoken:0.1.0 .
#
# The build stage runs the project's own scripts, scripts/install-deps.sh and scripts/build.sh,
# so the image is built exactly like a developer checkout; test/build.test.ts runs the same
# steps on a clean checkout, assembles the runtime stage from the COPY lines below and checks
# that it starts and holds nothing test-only, and test/k8s/e2e.test.ts builds this file with
# buildah and runs the image on a kubelet.
#
# The three images it starts from are build arguments, so a build that reaches no registry
# (air-gapped, or the tests) gives local ones (see the README):
#   DEBIAN_IMAGE   Debian 12 with apt sources: the build stage (apt and the npm registry must be
#                  reachable from it)
#   RUNTIME_IMAGE  Debian 12 with apt sources: the runtime stage
#   NODE_IMAGE     Node.js 20 (>= 20.17) in /usr/local, as the official node images have it:
#                  bin/node and lib/node_modules/npm; only those files are taken from it
ARG DEBIAN_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM ${DEBIAN_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# Behind a TLS-intercepting proxy npm must trust the proxy's CA: NODE_EXTRA_CA_CERTS names a PEM
# file with it inside the build (for example mounted with `buildah build --volume`).
ARG NODE_EXTRA_CA_CERTS
# Debian 12's own nodejs is 18, too old: Node.js and npm come from NODE_IMAGE.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && echo "node $(node --version), npm $(npm --version)"
WORKDIR /src
# The system packages and npm dependencies first: a source change does not redo them.
COPY package.json package-lock.json ./
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh --build-only
COPY . .
RUN bash scripts/build.sh
# The runtime needs no compiler, type checker or linter.
RUN npm prune --omit=dev --no-audit --no-fund
# What ships is what package.json's "files" lists, the same as in the npm package: no unit
# tests, fuzzer, test helpers or test BPF objects. npm pack makes exactly that tree in package/.
RUN npm pack --silent >/dev/null && tar -xzf netoken-*.tgz && rm netoken-*.tgz

FROM ${RUNTIME_IMAGE} AS runtime
# libbpf1 (with libelf1 and zlib1g) for the native addon; iproute2 because the agent reads
# interfaces and routes with `ip -json`. libstdc++6 is already part of Debian's base.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libbpf1 libelf1 zlib1g iproute2 \
 && rm -rf /var/lib/apt/lists/*
# The official Node.js binary links only glibc and libstdc++, so the binary alone is the runtime.
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
# npm pack's tree is the whole runtime: the bundle (dist/bundle, every JavaScript dependency in
# it), the native addon and the BPF objects. No node_modules.
COPY --from=build /src/package ./
# No USER here: the agent runs as root with three capabilities and the operator as 65532;
# the chart sets both (securityContext).
# V8's young generation capped at 1 MiB per semi-space: what keeps a busy agent's memory flat
# (src/lib/memory.ts DAEMON_NODE_OPTIONS; the tests and benchmarks start it the same way).
ENV NODE_OPTIONS=--max-semi-space-size=1
# One malloc arena: the arenas of Node's worker threads otherwise keep 10-15 MiB of a burst's C
# heap resident (src/lib/memory.ts DAEMON_MALLOC_ARENA_MAX).
ENV MALLOC_ARENA_MAX=1
ENTRYPOINT ["node", "/app/bin/netoken.js"]
