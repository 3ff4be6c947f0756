# Alcove signaling/web server. Build: docker compose build (see docker-compose.yml and docs/operations.md).
# tests/integration/test_wheel_install.py builds the wheel from exactly what the build stage copies, installs it
# outside the checkout and starts this image's CMD from there, so what this image runs is what the tests test.

# ---- web stage: the background-blur model and runtime, an npm package pinned in web/package-lock.json, copied
# into the package data by web/vendor.sh (node_modules itself never reaches the wheel)
FROM node:22-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json web/vendor.sh ./
RUN npm ci --omit=dev --no-audit --no-fund && sh vendor.sh

# ---- build stage: one wheel with the code, the templates and the static files (package data)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs (no .venv, .git, certs, .env or node_modules).
COPY pyproject.toml README.md ./
COPY signaling/ signaling/
COPY rtc/ rtc/
COPY server/ server/
COPY peer/ peer/
COPY tools/ tools/
COPY web/ web/
COPY --from=web /src/web/static/vendor/ web/static/vendor/
RUN pip wheel --no-deps --wheel-dir /dist .

# ---- runtime stage: the wheel and its dependencies, nothing of the source tree
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ALCOVE_DATA_DIR=/var/lib/alcove

COPY --from=build /dist/ /tmp/dist/
RUN pip install /tmp/dist/alcove-*.whl \
 && rm -rf /tmp/dist \
 && useradd --system --uid 10001 --home-dir /var/lib/alcove --shell /usr/sbin/nologin alcove \
 && mkdir -p /var/lib/alcove /etc/alcove/certs /run/alcove \
 && chown alcove:alcove /var/lib/alcove /run/alcove \
 && chmod 0700 /var/lib/alcove /run/alcove

# Nothing is written outside /var/lib/alcove (a volume), /run/alcove (the SFU's control sockets, a volume the
# media host shares: `alcove media-host`, docker-compose.yml) and /tmp (a tmpfs): the compose file runs this
# image with a read-only root filesystem.
WORKDIR /var/lib/alcove
USER 10001:10001
EXPOSE 8443
# The SFU's UDP ports when ALCOVE_MEDIA_PORTS=40000-40099 (publish them, see docker-compose.yml).
EXPOSE 40000-40099/udp

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import ssl,urllib.request as u;c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;u.urlopen('https://127.0.0.1:8443/healthz',context=c,timeout=4)"]

CMD ["alcove", "serve", "--host", "0.0.0.0", "--port", "8443"]
