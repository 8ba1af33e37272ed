# syntax=docker/dockerfile:1
# halp-repro: the package, its pinned dependencies and the workflow on the official PyTorch CUDA
# runtime image.
#
#   docker build -t halp-repro:0.1.0 --build-arg VCS_REF="$(git rev-parse HEAD)" .
#   docker run --rm --gpus all -v "$PWD/data:/opt/halp/data" halp-repro:0.1.0 halp --help
#   apptainer build halp-repro.sif docker-daemon://halp-repro:0.1.0   # the .sif for --sdm apptainer
#
# Base image: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime = Ubuntu 22.04, Python 3.11 (conda,
# /opt/conda), torch 2.5.1, CUDA 12.4, cuDNN 9. The host needs an NVIDIA driver for CUDA 12.x.
# Pinned by tag and digest; Docker resolves the digest, the tag is for people. The digest was NOT
# resolved against Docker Hub when this file was written (no registry access): it is the value
# that several unrelated public projects pin for this tag. Check it before a release with
#   docker buildx imagetools inspect pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
# A wrong digest fails the pull at this line; a re-pushed tag cannot change the image.
# Apptainer rejects "repo:tag@sha256:..."; there, write docker://pytorch/pytorch@sha256:<digest>.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime@sha256:c8268a92a69bd500f8be0e665b2630ee006dadaf7bfbc24249141b15ff622755

ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="halp-repro" \
      org.opencontainers.image.description="Reproduction of HaLP (CVPR 2023): skeleton self-supervised learning with hallucinated latent positives; package, pinned environment and Snakemake workflow" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime" \
      org.opencontainers.image.base.digest="sha256:c8268a92a69bd500f8be0e665b2630ee006dadaf7bfbc24249141b15ff622755"

# WANDB_MODE=offline: runs log locally (wandb sync uploads them later); no API key needed.
# /opt/venv: our packages live in a virtual environment on top of the base image's Python, which
# still provides torch (--system-site-packages); pip never has to replace a conda-installed
# package of the base image.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/halp

# Dependencies first (cached while only the code changes). torch is not in the requirements and
# must not move: the constraint holds it at the base image's own build, so a dependency asking for
# another torch fails the build instead of pulling a second, PyPI torch.
COPY envs/requirements.txt envs/requirements.txt
RUN /opt/conda/bin/python -m venv --system-site-packages /opt/venv \
    && python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    && python -c 'import torch; print(f"torch=={torch.__version__}")' > /tmp/torch-constraint.txt \
    && python -m pip install --no-cache-dir -c /tmp/torch-constraint.txt -r envs/requirements.txt \
    && rm /tmp/torch-constraint.txt

# The package itself, without dependencies (they are all above); then only what the workflow
# reads: its Snakefile, rules, config, and benchmarks/bench_pretrain.py (rule overhead).
COPY pyproject.toml README.md ./
COPY src/ src/
RUN python -m pip install --no-cache-dir --no-deps . \
    && python -c 'import halp, numpy, torch; print("halp", halp.__version__, "torch", torch.__version__, "numpy", numpy.__version__)'
COPY Snakefile ./
COPY config/ config/
COPY workflow/ workflow/
COPY benchmarks/ benchmarks/

# Unprivileged user "halp" (uid/gid 1000), named by number so that runtimes can check that it is
# not root without reading /etc/passwd (e.g. Kubernetes runAsNonRoot). The code stays root-owned,
# read-only for it; the working directory itself is the user's, so the workflow can create
# data/, runs/, results/, logs/ and .snakemake/ there. (Apptainer ignores USER: it runs as you.)
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash halp \
    && chown halp:halp /opt/halp
USER 1000:1000

CMD ["halp", "--help"]
