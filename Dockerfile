# One image for every Descent role: api, worker-cpu, migrate (and worker-gpu, see below).
FROM python:3.11-slim
WORKDIR /app
# CPU wheel of torch, pinned; a GPU image sets TORCH_INDEX to a CUDA wheel index instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
ENV DESCENT_HOST=0.0.0.0
EXPOSE 8000
CMD ["descent", "api"]
