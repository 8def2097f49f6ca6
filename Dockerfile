# One image for every Descent role: api, worker-cpu, migrate (and worker-gpu, see below).
# It runs as the unprivileged user `descent`; the code is root-owned and read-only to it.
FROM python:3.11-slim
WORKDIR /app
# CPU wheel of torch, pinned; a GPU image sets TORCH_INDEX to a CUDA wheel index instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && python -m compileall -q service workers migrations
# The runtime user, with a home for caches (torch, celery) and the only writable app directory:
# the embedded data dir (SQLite files) for `docker run` without a database server.
RUN groupadd --system --gid 10001 descent \
    && useradd --system --uid 10001 --gid descent --create-home --home-dir /home/descent \
       --shell /usr/sbin/nologin descent \
    && mkdir -p /app/.descent \
    && chown descent:descent /app/.descent
ENV DESCENT_HOST=0.0.0.0 \
    DESCENT_DATA_DIR=/app/.descent \
    DESCENT_ALLOWED_HOSTS=localhost,127.0.0.1,[::1] \
    PYTHONDONTWRITEBYTECODE=1
USER descent
EXPOSE 8000
CMD ["descent", "api"]
