# The image the RayService runs (head, CPU and GPU workers) and the ingest pods.
#   CPU (k8s/overlays/cpu-dev):  docker build -t ghcr.io/streamdycoke/streamdycoke:0.1.0-cpu .
#   GPU (k8s/overlays/gpu-prod): docker build -t ghcr.io/streamdycoke/streamdycoke:0.1.0-gpu \
#       --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# The Ray version must match the RayService's rayVersion (2.60.0) and the image's Python the cluster's.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# torch first, from the index that matches the base image (CPU or CUDA), then the project with the
# pipeline extra (ray[serve] is already in the base image at the same version).
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "${TORCH_INDEX}"

WORKDIR /home/ray/streamdycoke
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users streamdycoke/ streamdycoke/
COPY --chown=ray:users actors/ actors/
COPY --chown=ray:users deployments/ deployments/
RUN pip install --no-cache-dir ".[pipeline]" \
    && python -c "import deployments.app, actors.camera, streamdycoke; print('streamdycoke image ok')"

# Serve imports deployments.app:build_app; Hugging Face caches under the home directory.
ENV HF_HOME=/home/ray/.cache/huggingface
