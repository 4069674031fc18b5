# syntax=docker/dockerfile:1
#
# Portcullis container image (SPEC §11; deploy/README.md explains every choice).
#
# Base: Node 26, the Active LTS line since October 2026, on Debian 13 "trixie" slim. The major
# (and the Debian release) is pinned so a rebuild never moves to another major by itself; bump
# both stages together. For reproducible builds pin the digest too (node:26-trixie-slim@sha256:…).

# ---- build stage: install everything, compile TypeScript, drop the dev dependencies ----------
FROM node:26-trixie-slim AS build
WORKDIR /app
# Toolchain for the native addons (better-sqlite3, argon2) when no prebuilt binary matches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# The sources come in before `npm ci`: a `prepare` script (if package.json has one) compiles
# them during the install.
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY src ./src
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
# Build explicitly (nothing to do when `prepare` already did), then keep production dependencies only.
RUN npm run build \
 && rm -f dist/.tsbuildinfo \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime stage: dist/ and production node_modules, owned by root, run as uid 1000 -------
FROM node:26-trixie-slim AS runtime
# PORTCULLIS_CONFIG: the container config (0.0.0.0 listeners, no demo upstream, everything
# site-specific from the environment). Mount your own file and point this variable at it.
# MALLOC_ARENA_MAX=2: glibc keeps less argon2 memory per thread (docs/operations.md, Memory).
ENV NODE_ENV=production \
    PORTCULLIS_CONFIG=/app/config/container.yaml \
    MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config/container.yaml ./config/container.yaml
# The only place the gateway writes, and only in embedded mode (SQLite file, admin.token): with
# DATABASE_URL and REDIS_URL set it writes nothing, so the root filesystem can be read-only.
RUN install -d -o 1000 -g 1000 -m 0700 /var/lib/portcullis
VOLUME ["/var/lib/portcullis"]
# uid:gid 1000 is the image's unprivileged `node` user, given as numbers so that Kubernetes'
# runAsNonRoot can verify it without a runAsUser.
USER 1000:1000
EXPOSE 8080 9464
# Liveness of the process through the admin listener, with Node's own fetch (no curl in the
# image). The port follows PORTCULLIS_ADMIN_LISTEN (default 0.0.0.0:9464).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const p=(process.env.PORTCULLIS_ADMIN_LISTEN||':9464').split(':').pop();fetch('http://127.0.0.1:'+p+'/healthz',{signal:AbortSignal.timeout(4000)}).then((r)=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli/bin.js"]
CMD ["serve"]
