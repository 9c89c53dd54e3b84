# The container image deploy/kubernetes runs (ghcr.io/transship/transship:<version>): the packed npm package
# (`npm run pack`) installed globally on Node 24, so the image runs exactly what `npm i -g ./transship-*.tgz` gives a
# user: compiled JavaScript, no TypeScript loader, `transship` on PATH (/usr/local/bin/transship).
#   docker build -t ghcr.io/transship/transship:0.1.0 .
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY . .
RUN npm ci --no-audit --no-fund && node scripts/pack.mjs --out /out

FROM node:24-bookworm-slim
COPY --from=build /out/ /tmp/pkg/
RUN npm i -g --no-audit --no-fund /tmp/pkg/transship-*.tgz && rm -rf /tmp/pkg && npm cache clean --force
# glibc malloc settings for serve (packages/transship/src/server/malloc.ts explains them).
ENV MALLOC_TRIM_THRESHOLD_=67108864 MALLOC_MMAP_THRESHOLD_=4194304
USER node
ENTRYPOINT ["transship"]
