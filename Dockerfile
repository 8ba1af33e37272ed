# halp-repro: the package, its hash-locked dependencies and the workflow, on a base image that
# brings Python 3.11 with torch.
#
# GPU image (the default base, the official PyTorch CUDA runtime image):
#   docker build -t halp-repro:0.1.0 --build-arg VCS_REF="$(git rev-parse HEAD)" .
#   docker run --rm --gpus all -v "$PWD:/work" -w /work halp-repro:0.1.0 halp --help
#   apptainer build halp-repro.sif docker-daemon://halp-repro:0.1.0   # the .sif for --sdm apptainer
#
# CPU image: the same file on a local Debian bookworm base that holds torch's CPU build
# (envs/cpu-base.Dockerfile). .ci/container.sh makes that base, builds this file on it and runs
# the tests and the smoke workflow in the result:
#   docker build --build-arg BASE_IMAGE=halp-base:cpu -t halp-repro:0.1.0-cpu .
#
# Only the base differs between the two: the same lock (envs/requirements-lock.txt), the same
# user, the same entry points. The base must provide `python3` (3.11) on PATH with torch
# importable; the dependencies go into a virtual environment on top of it
# (--system-site-packages), so pip never replaces a package of the base image.
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 on Docker 20.10): RUN
# uses --mount. There is deliberately no "# syntax=" line, so the builder's own Dockerfile
# frontend is used and nothing is pulled for it (builds work where no registry is reachable).
# Behind a TLS-inspecting proxy, hand pip the proxy's CA bundle as a build secret, which is
# mounted for the install steps only and never stored in a layer:
#   docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt ...
#
# Default base: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime = Ubuntu 22.04, Python 3.11 (conda,
# /opt/conda), torch 2.5.1, CUDA 12.4, cuDNN 9. The host needs an NVIDIA driver for CUDA 12.x.
# Pinned by tag and digest; Docker resolves the digest, the tag is for people. The digest was NOT
# resolved against Docker Hub when this file was written (no registry access): it is the value
# that several unrelated public projects pin for this tag. Check it before a release with
#   docker buildx imagetools inspect pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
# A wrong digest fails the pull at this line; a re-pushed tag cannot change the image.
# Apptainer rejects "repo:tag@sha256:..."; there, write docker://pytorch/pytorch@sha256:<digest>.
# The base.* labels below describe this default; a build on another base overrides them with
# docker build --label (as .ci/container.sh does).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime@sha256:c8268a92a69bd500f8be0e665b2630ee006dadaf7bfbc24249141b15ff622755
FROM ${BASE_IMAGE}

ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="halp-repro" \
      org.opencontainers.image.description="Reproduction of HaLP (CVPR 2023): skeleton self-supervised learning with hallucinated latent positives; package, pinned environment and Snakemake workflow" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime" \
      org.opencontainers.image.base.digest="sha256:c8268a92a69bd500f8be0e665b2630ee006dadaf7bfbc24249141b15ff622755"

# WANDB_MODE=offline: runs log locally (wandb sync uploads them later); no API key needed.
# /opt/venv: our packages, in a virtual environment on top of the base image's Python. Until it
# exists, `python3` below is the base image's own. The environment has no pip of its own (a new
# one would bring an old setuptools that hides the base's): the base's pip installs into it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/halp

# Dependencies first (cached while only the code changes), every file checked against the
# lock's sha256 (--require-hashes: an unlisted dependency fails too). A lock older than
# envs/requirements.txt fails the build. torch is not in the lock and must not move: it is
# compared before and after, and pip check proves the base's torch still has what it needs.
COPY envs/requirements.txt envs/requirements-lock.txt envs/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && { grep -q "sha256=$(sha256sum envs/requirements.txt | cut -d' ' -f1)" envs/requirements-lock.txt \
         || { echo "envs/requirements-lock.txt is older than envs/requirements.txt: run bash envs/lock.sh" >&2; exit 1; }; } \
    && python3 -m venv --system-site-packages --without-pip /opt/venv \
    && python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    && base_torch=$(python -c 'import torch; print(torch.__version__, torch.__file__)') \
    && python -m pip install --no-cache-dir --require-hashes -r envs/requirements-lock.txt \
    && python -m pip check \
    && test "$(python -c 'import torch; print(torch.__version__, torch.__file__)')" = "$base_torch"

# The package itself, without dependencies (they are all above); then only what the workflow
# reads: its Snakefile, rules, config, and benchmarks/bench_pretrain.py (rule overhead).
COPY pyproject.toml README.md ./
COPY src/ src/
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python -m pip install --no-cache-dir --no-deps . \
    && rm -rf build src/*.egg-info \
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
