# One image for every Descent role: api, worker-cpu, migrate; worker-gpu and flower build it with
# their own build arguments (TORCH_VARIANT, EXTRA_PACKAGES, below).
# It runs as the unprivileged user `descent`; the code is root-owned and read-only to it.
FROM python:3.11-slim
WORKDIR /app
# torch, pinned as in pyproject.toml: the CPU build by default; a GPU image names a CUDA build,
# `--build-arg TORCH_VARIANT=cu130` (docker-compose.yml's worker-gpu does), or a whole TORCH_INDEX.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && python -m compileall -q service workers migrations
# Packages only some images need, e.g. `--build-arg EXTRA_PACKAGES="flower>=2,<3"` (the flower
# profile's image); empty by default, so this layer changes nothing.
ARG EXTRA_PACKAGES=
RUN if [ -n "${EXTRA_PACKAGES}" ]; then pip install --no-cache-dir ${EXTRA_PACKAGES}; fi
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
