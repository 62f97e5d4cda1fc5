# The billing engine's image: the HTTP API by default; the same image runs `billing worker`
# and `billing db upgrade` (see compose.yaml). Installed the way CI installs the project
# (`pip install -e .`, in place: the migrations and example plans stay beside the package).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    BILLING_PLANS_DIR=/app/plans
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY billing ./billing
COPY migrations ./migrations
COPY plans ./plans
RUN pip install -e . && useradd --system --home /app billing && chown -R billing /app
USER billing
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["billing", "serve", "--host", "0.0.0.0", "--port", "8000", "--log-format", "json"]
