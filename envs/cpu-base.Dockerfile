# The local base of the CPU image: Debian bookworm (debootstrap --variant=minbase with python3,
# python3-venv, python3-pip, ca-certificates, imported as ROOTFS) plus torch's CPU build and its
# dependencies, every file checked against envs/torch-cpu-lock.txt. It plays the part that
# pytorch/pytorch plays for the GPU image: a Python 3.11 on PATH whose site-packages hold torch;
# the Dockerfile at the top of the repository then builds on either. Made and used by
# .ci/container.sh; by hand (CONTEXT holds envs/torch-cpu-lock.txt and wheels/, the torch wheel):
#
#   debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
#       bookworm ROOTFS_DIR http://deb.debian.org/debian
#   tar -C ROOTFS_DIR -c . | docker import - halp-rootfs:bookworm
#   DOCKER_BUILDKIT=1 docker build -f envs/cpu-base.Dockerfile -t halp-base:cpu CONTEXT
#
# The torch wheel is torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl, as the PyTorch CPU
# index serves it; its sha256 is in the lock. The context is bind-mounted for the install only,
# so the wheel file itself never becomes a layer.
ARG ROOTFS=halp-rootfs:bookworm
FROM ${ROOTFS}

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# As root, Debian's pip installs into /usr/local/lib/python3.11/dist-packages, which the
# system's python3 and every virtual environment made with --system-site-packages see.
RUN --mount=type=bind,target=/tmp/context --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m pip install --no-cache-dir --break-system-packages --require-hashes \
        --find-links /tmp/context/wheels -r /tmp/context/envs/torch-cpu-lock.txt \
    && python3 -c 'import sys, torch; assert sys.version_info[:2] == (3, 11); print("torch", torch.__version__)'

CMD ["python3"]
