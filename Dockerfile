# The mqtt-guard image: compiled in one stage, run from a slim one as the unprivileged `node`
# user. Node 24 is an LTS line supported until April 2028 (20 reached its end in April 2026);
# package.json's engines stay >= 20, which CI runs. On Node 24.21 the listener (client
# certificates through the handle's verifyError), auth, embedded-broker and codec tests pass.

# Build stage: compile TypeScript with the dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY console ./console
RUN npm ci --ignore-scripts && npx tsc -p tsconfig.build.json && npx tsc -p console/tsconfig.json

# Runtime stage: production dependencies and the compiled code only.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY config ./config
# The web console on the admin port: its page and style (the script is in dist/console-build).
COPY console/index.html console/style.css ./console/
USER node
# 1883: MQTT (config/docker.yaml). 9884: the admin endpoint (health, metrics, console), which
# config/docker.yaml opens on 0.0.0.0 and so requires MQTT_GUARD_ADMIN_TOKEN.
EXPOSE 1883 9884
# Liveness from inside the container: /healthz answers 200 while the process runs, needs no
# token, and the slim image has no curl, so Node's own fetch asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9884/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/mqtt-guard.js"]
CMD ["start", "--config", "config/docker.yaml"]
