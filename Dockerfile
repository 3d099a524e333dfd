# syntax=docker/dockerfile:1
# keyward's image: `docker build -t keyward .` (or `docker compose up --build`,
# see docker-compose.yml and README "Deploying"). test/deploy.dockerfile.test.ts
# runs this file's COPY and RUN lines on the host, so keep them plain.

# Build: every dependency (tsc is a dev dependency), then the compiled dist/.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would run the build before the sources are in
# (and protobufjs's postinstall only prints a version notice). The cache mount
# keeps npm's downloads out of every layer and across builds.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build

# Runtime: production dependencies, the compiled server, and what it reads at
# run time (migrations/ at start, proto/ for server reflection).
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    KEYWARD_ADDR=0.0.0.0:50051 \
    KEYWARD_METRICS_ADDR=0.0.0.0:9464
WORKDIR /app
COPY package.json package-lock.json ./
# No scripts: `prepare` would run tsc, which is not installed here.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY migrations ./migrations
COPY proto ./proto
COPY --from=build /app/dist/src ./dist/src
# Files stay root's and read-only to the process; keyward writes nothing to disk.
USER node
EXPOSE 50051 9464
# grpc.health.v1.Health/Check of the whole server: healthy only while SERVING
# (NOT_SERVING while it stops). The start period covers migrations and
# PostgreSQL or Redis still starting; the probe gives up after 2 s itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "dist/src/healthProbe.js"]
# node is PID 1 and gets SIGTERM itself: src/main.ts handles SIGTERM and SIGINT
# (drain, write usage, close, exit 0), and keyward starts no child processes,
# so no init (tini, --init) is needed to forward signals or reap zombies.
# Give it longer than KEYWARD_SHUTDOWN_TIMEOUT_MS to stop (compose:
# stop_grace_period; Kubernetes: terminationGracePeriodSeconds).
CMD ["node", "dist/src/main.js"]
