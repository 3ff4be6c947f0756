# Alcove signaling/web server. Build: docker compose build (see docker-compose.yml and docs/operations.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ALCOVE_DATA_DIR=/var/lib/alcove

WORKDIR /app

# Only what the package needs (no .venv, .git, certs or .env in the image).
COPY pyproject.toml README.md* ./
COPY signaling/ signaling/
COPY rtc/ rtc/
COPY server/ server/
COPY peer/ peer/
COPY tools/ tools/
COPY web/ web/
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/alcove --shell /usr/sbin/nologin alcove \
 && mkdir -p /var/lib/alcove /etc/alcove/certs \
 && chown alcove:alcove /var/lib/alcove \
 && chmod 0700 /var/lib/alcove

USER alcove
EXPOSE 8443

# The compose file defines the health check (it knows whether TLS is on); this one is the default.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import ssl,urllib.request as u;c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;u.urlopen('https://127.0.0.1:8443/healthz',context=c,timeout=4)"]

CMD ["alcove", "serve", "--host", "0.0.0.0", "--port", "8443"]
