# Build stage: compile TypeScript with the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY console ./console
RUN npm ci --ignore-scripts && npx tsc -p tsconfig.build.json && npx tsc -p console/tsconfig.json

# Runtime stage: production dependencies and the compiled code only.
FROM node:20-bookworm-slim
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
EXPOSE 1883
ENTRYPOINT ["node", "bin/mqtt-guard.js"]
CMD ["start", "--config", "config/docker.yaml"]
