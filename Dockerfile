# The chatmodel-operator image: `chatmodel operator` on a slim Python, as a non-root user.
#   docker build -t REGISTRY/chatmodel-operator:0.1.0 .
# The Helm chart runs it with a read-only root filesystem and an emptyDir at /tmp.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The root filesystem is read-only at run time: HOME and the Hugging Face cache (planning
    # downloads config.json and tokenizer files) live on the writable /tmp volume.
    HOME=/tmp \
    HF_HOME=/tmp/huggingface

# Only what the package needs to install; the rest of the repository stays out of the image.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN pip install /src && rm -rf /src

# A numeric user, so the kubelet can check runAsNonRoot without reading /etc/passwd.
RUN useradd --system --uid 65532 --user-group --no-create-home --home-dir /tmp chatmodel
USER 65532:65532

# Prometheus metrics, also the liveness and readiness probe target.
EXPOSE 8080
ENTRYPOINT ["chatmodel", "operator"]
CMD ["--all-namespaces", "--metrics-port=8080"]
