# syntax=docker/dockerfile:1
# One image for the operator and the node agent (the chart chooses the command):
#   docker build -t REGISTRY/netoken:0.1.0 .
#
# The build stage runs the project's own scripts, scripts/install-deps.sh and scripts/build.sh,
# so the image is built exactly like a developer checkout; test/build.test.ts runs the same
# steps on a clean checkout, assembles the runtime stage from the COPY lines below and checks
# that it starts and holds nothing test-only.

ARG DEBIAN_RELEASE=bookworm
ARG NODE_MAJOR=20

FROM debian:${DEBIAN_RELEASE} AS build
ARG NODE_MAJOR
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# Node.js from NodeSource, as install-deps.sh expects: Debian 12's own nodejs is 18 (too old),
# and NodeSource's package also ships the headers in /usr/include/node that cmake-js compiles
# the addon against (build.sh sets npm_config_nodedir=/usr, so nothing is downloaded).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg \
 && install -d -m 0755 /etc/apt/keyrings \
 && curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor -o /etc/apt/keyrings/nodesource.gpg \
 && echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_${NODE_MAJOR}.x nodistro main" \
      > /etc/apt/sources.list.d/nodesource.list \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The system packages and npm dependencies first: a source change does not redo them.
COPY package.json package-lock.json ./
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh
COPY . .
RUN bash scripts/build.sh
# The runtime needs no compiler, type checker or linter.
RUN npm prune --omit=dev --no-audit --no-fund
# What ships is what package.json's "files" lists, the same as in the npm package: no unit
# tests, fuzzer, test helpers or test BPF objects. npm pack makes exactly that tree in package/.
RUN npm pack --silent >/dev/null && tar -xzf netoken-*.tgz && rm netoken-*.tgz

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libbpf1 (with libelf1 and zlib1g) for the native addon; iproute2 because the agent reads
# interfaces and routes with `ip -json`. libstdc++6 is already part of the slim image.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libbpf1 libelf1 zlib1g iproute2 \
 && rm -rf /var/lib/apt/lists/*
# NodeSource's node links only glibc and libstdc++, so the binary alone is the runtime.
COPY --from=build /usr/bin/node /usr/local/bin/node
WORKDIR /app
# npm pack's tree is the whole runtime: the bundle (dist/bundle, every JavaScript dependency in
# it), the native addon and the BPF objects. No node_modules.
COPY --from=build /src/package ./
# No USER here: the agent runs as root with three capabilities and the operator as 65532;
# the chart sets both (securityContext).
ENTRYPOINT ["node", "/app/bin/netoken.js"]
