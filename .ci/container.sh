#!/usr/bin/env bash
# The container, built and run for real: the CPU variant of the image, on a Debian machine where
# only package registries are reachable (no image registry), as root.
#
#   1. installs docker.io and debootstrap (apt) when missing; starts dockerd in the background
#      unless one already answers, and waits for `docker info`
#   2. makes the local base: Debian bookworm by debootstrap, imported (kept as an image: a rerun
#      reuses it), then torch's CPU wheel on top, hash-checked (envs/cpu-base.Dockerfile)
#   3. builds the image from the repository's Dockerfile on that base
#   4. inside the image, as its non-root user, with a copy of the work tree and a scratch folder
#      mounted: `halp --version`, the fast tests, and the whole smoke workflow
#      (snakemake --cores 2 --configfile config/smoke.yaml) in the scratch folder
#   4b. the same smoke workflow through Snakemake's Apptainer path: `snakemake --use-singularity`
#      on the host, as that user, with .ci/apptainer-standin as `apptainer` (docker run of the
#      image); its results equal, number by number, those of step 4 and (HALP_LOCAL_RUN=DIR) of
#      the local run in DIR
#   5. checks the outputs: every table present and non-empty, every file in the mounted folders
#      owned by the user the container ran as (not root), nothing written inside the container
#      (docker diff shows only the mount points: /tmp and $HOME are a tmpfs)
#   6. reports the build times and the image size; stops the dockerd it started, removes its
#      containers and scratch folders (the images stay, for the next run's cache)
#
# Any failure exits non-zero with the reason. Settings (environment):
#   HALP_TORCH_WHEEL  the torch 2.13.0 CPU wheel (default: found in pip's find-links)
#   HALP_PIP_CERT     the CA bundle pip trusts (default: pip's configured cert, else certifi's)
#   HALP_CONTAINER_STATE  folder for logs and build contexts (default /var/tmp/halp-container)
#   HALP_CONTAINER_NICE   niceness of dockerd and debootstrap (default 10)
#   HALP_DEBIAN_MIRROR    (default http://deb.debian.org/debian)
#   HALP_CONTAINER_PYTEST_ARGS  pytest's selection inside the image (default: the fast subset)
#   HALP_LOCAL_RUN        a finished local smoke run to compare the apptainer path with
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${HALP_CONTAINER_STATE:-/var/tmp/halp-container}
nice_level=${HALP_CONTAINER_NICE:-10}
mirror=${HALP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
torch_wheel_name=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
rootfs_image=halp-rootfs:bookworm
base_image=halp-base:cpu
image=halp-repro:ci-cpu
image_user=1000 # the Dockerfile's USER
# the docker.io package's client: it talks BuildKit to its own daemon without the buildx plugin
docker=/usr/bin/docker
export DOCKER_BUILDKIT=1

started=$(date +%s)
log() { printf '[container %4ds] %s\n' "$(($(date +%s) - started))" "$*"; }
die() {
    printf 'container.sh: error: %s\n' "$*" >&2
    exit 1
}
# run_logged LOGFILE CMD...: the command's output goes to LOGFILE; its tail is shown on failure
run_logged() {
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 60 "$logfile" >&2
        die "'$*' failed (full log: $logfile)"
    fi
}

[[ $(id -u) -eq 0 ]] || die "run as root: it installs packages and starts dockerd"
[[ $(uname -m) == x86_64 ]] || die "the CPU wheel and the lock are for x86_64, this is $(uname -m)"
mkdir -p "$state"
if [[ -n ${HALP_LOCAL_RUN:-} && ! -d $HALP_LOCAL_RUN/results ]]; then
    die "HALP_LOCAL_RUN=$HALP_LOCAL_RUN: no results/ of a local smoke run there"
fi

# --- inputs: the torch wheel and the CA bundle --------------------------------------------

pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
torch_wheel=${HALP_TORCH_WHEEL:-}
find_wheel() {  # find_wheel DIR...: the first DIR/$torch_wheel_name that exists
    local dir
    for dir in "$@"; do
        if [[ -f "$dir/$torch_wheel_name" ]]; then
            echo "$dir/$torch_wheel_name"
            return
        fi
    done
}
if [[ -z "$torch_wheel" ]]; then
    # shellcheck disable=SC2086 # find-links is a space-separated list
    torch_wheel=$(find_wheel ${PIP_FIND_LINKS:-})
fi
if [[ -z "$torch_wheel" ]]; then
    # shellcheck disable=SC2046
    torch_wheel=$(find_wheel $(pip_setting find-links))
fi
[[ -n "$torch_wheel" && -f "$torch_wheel" ]] || die "no torch CPU wheel: set HALP_TORCH_WHEEL to \
$torch_wheel_name (pip download --no-deps --only-binary :all: --python-version 3.11 \
--platform manylinux_2_28_x86_64 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu)"

pip_cert=${HALP_PIP_CERT:-${PIP_CERT:-$(pip_setting cert)}}
if [[ -z "$pip_cert" ]]; then
    pip_cert=$(python3 -c 'import certifi; print(certifi.where())' 2>/dev/null \
        || echo /etc/ssl/certs/ca-certificates.crt)
fi
[[ -s "$pip_cert" ]] || die "CA bundle $pip_cert is missing or empty (set HALP_PIP_CERT)"

# --- 1. docker and debootstrap --------------------------------------------------------------

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || [[ ! -x $docker ]]; then
    log "installing docker.io and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    run_logged "$state/apt.log" apt-get update
    run_logged "$state/apt.log" apt-get install -y --no-install-recommends \
        docker.io debootstrap iptables ca-certificates tar
fi

dockerd_pid=""
scratch=""
containers=()
cleanup() {
    local status=$?
    for c in "${containers[@]}"; do
        "$docker" rm -f "$c" >/dev/null 2>&1 || true
    done
    # the scratch folder may hold files of the container's user: remove as root
    [[ -n "$scratch" ]] && rm -rf "$scratch"
    rm -rf "$state/base-context"
    if [[ -n "$dockerd_pid" ]]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 30); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            echo "container.sh: dockerd ($dockerd_pid) did not stop in 30 s" >&2
        else
            log "stopped dockerd"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT

if "$docker" info >/dev/null 2>&1; then
    log "using the running Docker engine"
else
    log "starting dockerd"
    nice -n "$nice_level" dockerd >"$state/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do
        "$docker" info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 1
    done
    if ! "$docker" info >/dev/null 2>&1; then
        tail -n 30 "$state/dockerd.log" >&2
        die "dockerd did not start (log above, in full: $state/dockerd.log)"
    fi
fi
log "Docker engine $("$docker" version --format '{{.Server.Version}}')"

# --- 2. the local base ----------------------------------------------------------------------

if "$docker" image inspect "$rootfs_image" >/dev/null 2>&1; then
    log "reusing $rootfs_image (remove it to make it anew)"
else
    log "debootstrap bookworm (minbase)"
    t0=$(date +%s)
    rootfs="$state/rootfs"
    rm -rf "$rootfs"
    run_logged "$state/debootstrap.log" nice -n "$nice_level" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" "$mirror"
    # without the package caches and lists: apt-get update refetches those
    tar -C "$rootfs" --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' -c . \
        | "$docker" import --change 'ENV LANG=C.UTF-8' \
            --message "debootstrap --variant=minbase bookworm $mirror" - "$rootfs_image" >/dev/null
    rm -rf "$rootfs"
    log "made $rootfs_image in $(($(date +%s) - t0)) s"
fi

log "building $base_image (torch CPU wheel, envs/torch-cpu-lock.txt)"
t0=$(date +%s)
context="$state/base-context"
rm -rf "$context"
mkdir -p "$context/envs" "$context/wheels"
cp "$repo/envs/torch-cpu-lock.txt" "$context/envs/"
cp -l "$torch_wheel" "$context/wheels/" 2>/dev/null || cp "$torch_wheel" "$context/wheels/"
run_logged "$state/build-base.log" "$docker" build --progress=plain \
    --secret "id=pip-cert,src=$pip_cert" --build-arg "ROOTFS=$rootfs_image" \
    -f "$repo/envs/cpu-base.Dockerfile" -t "$base_image" "$context"
rm -rf "$context"
base_seconds=$(($(date +%s) - t0))
log "built $base_image in $base_seconds s"

# --- 3. the image ---------------------------------------------------------------------------

log "building $image from the Dockerfile on $base_image"
t0=$(date +%s)
vcs_ref=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
base_id=$("$docker" image inspect --format '{{.Id}}' "$base_image")
run_logged "$state/build-image.log" "$docker" build --progress=plain \
    --secret "id=pip-cert,src=$pip_cert" \
    --build-arg "BASE_IMAGE=$base_image" --build-arg "VCS_REF=$vcs_ref" \
    --label "org.opencontainers.image.base.name=$base_image" \
    --label "org.opencontainers.image.base.digest=$base_id" \
    -t "$image" "$repo"
image_seconds=$(($(date +%s) - t0))
log "built $image in $image_seconds s"

# --- 4. inside the image --------------------------------------------------------------------

# as the invoking user when that is not root (sudo), else as the image's own user
run_uid=${SUDO_UID:-$(id -u)}
run_gid=${SUDO_GID:-$(id -g)}
if [[ $run_uid -eq 0 ]]; then
    run_uid=$image_user
    run_gid=$image_user
fi
# /work in the container: tree/, a copy of the work tree (tracked and untracked files, without
# what git ignores), and smoke/, the smoke workflow's working directory. A copy, because some
# tests run Snakemake in the repository root and leave .snakemake/ there: the host's tree stays
# as it was, and every file the container makes can be checked.
scratch=$(mktemp -d "$state/run.XXXXXX")
mkdir "$scratch/tree" "$scratch/smoke"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -C "$scratch/tree" -xf -
[[ -f "$scratch/tree/pyproject.toml" && -d "$scratch/tree/tests" ]] \
    || die "could not copy the work tree of $repo (is it a git checkout?)"
chown -R "$run_uid:$run_gid" "$scratch"
owned_before=$(find "$scratch" | wc -l)

# in_image NAME WORKDIR CMD...: run CMD in a fresh container of the image; fail when it fails or
# when it wrote anything inside the container
in_image() {
    local name=$1 workdir=$2
    shift 2
    local cname="halp-ci-$name-$$"
    containers+=("$cname")
    if ! "$docker" run --name "$cname" --user "$run_uid:$run_gid" \
        --tmpfs /tmp:rw,exec,mode=1777 -e HOME=/tmp/home \
        -v "$scratch:/work" -v "$pip_cert:/run/host-ca.crt:ro" \
        -w "$workdir" "$image" "$@"; then
        die "in the image: '$*' failed"
    fi
    local written
    # docker diff lists the mount points and the working directory that docker itself made
    # under the mounts; anything else was written
    written=$("$docker" diff "$cname" | grep -vxF -e 'A /work' -e "A $workdir" -e 'C /run' \
        -e 'A /run/host-ca.crt' || true)
    [[ -z "$written" ]] || die "'$*' wrote inside the container:"$'\n'"$written"
    "$docker" rm "$cname" >/dev/null
}

log "in the image: halp --version"
in_image version /work/smoke halp --version >"$state/version.txt"
version=$(cat "$state/version.txt")
echo "$version"
[[ "$version" == *"$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/pyproject.toml")"* ]] \
    || die "halp --version printed '$version', not the version of pyproject.toml"

# The fast subset: the tests not marked slow, less the training-heavy modules (the main CI run
# has them, on the same versions) and the CLI's end-to-end smoke test (the workflow below runs
# every stage of it). The package under test is the image's (/opt/venv), not tree/src.
log "in the image: the fast tests (pytest from envs/test-lock.txt)"
pytest_args=${HALP_CONTAINER_PYTEST_ARGS:-"-m 'not slow' --ignore=tests/test_learning.py \
--ignore=tests/test_train.py --ignore=tests/test_sync.py --ignore=tests/test_reliability_train.py \
--deselect=tests/test_cli.py::test_smoke_runs_end_to_end"}
in_image tests /work/tree bash -c "set -euo pipefail
    PIP_CERT=/run/host-ca.crt python -m pip install --quiet --no-cache-dir --require-hashes \
        --no-deps --target /tmp/test-deps -r envs/test-lock.txt
    PYTHONPATH=/tmp/test-deps python -m pytest -q -p no:cacheprovider $pytest_args tests
    python -c 'import halp, sys; sys.exit(not halp.__file__.startswith(\"/opt/venv/\"))'"

log "in the image: the smoke workflow"
in_image smoke /work/smoke snakemake --snakefile /opt/halp/Snakefile --cores 2 \
    --configfile /opt/halp/config/smoke.yaml

# --- 4b. the smoke workflow through Snakemake's Apptainer path -------------------------------

# Apptainer cannot be installed here: .ci/apptainer-standin, on PATH as `apptainer`, carries
# out the Apptainer command lines Snakemake writes as `docker run` of the image (its header
# says what it keeps of Apptainer's defaults). Snakemake runs on the host, as the same
# unprivileged user, from a copy of the work tree; every rule runs in the image.
log "snakemake --use-singularity (the README's spelling) through the apptainer stand-in"
app="$scratch/apptainer"
mkdir -p "$app/work" "$app/home" "$app/bin"
# from the copy of the work tree, which that user owns (the checkout may be unreadable to it)
ln -s "$scratch/tree/.ci/apptainer-standin" "$app/bin/apptainer"
# the workflow's `container:` (config/smoke.yaml: halp-repro.sif) names the image file
printf '# apptainer stand-in: docker image %s\n' "$image" >"$app/work/halp-repro.sif"
chown -R "$run_uid:$run_gid" "$app"
docker_gid=$(stat -c %g /var/run/docker.sock)
# Snakemake on the host for that user: a venv of the system Python at the CI venv's Snakemake
# version (the CI venv's interpreter may lie where that user cannot read it, e.g. under /root)
smk_version=$(snakemake --version) || die "no snakemake on PATH (activate the CI venv)"
run_logged "$state/apptainer-venv.log" /usr/bin/python3 -m venv "$app/venv"
run_logged "$state/apptainer-venv.log" "$app/venv/bin/python" -m pip install -q \
    "snakemake==$smk_version"
chown -R "$run_uid:$run_gid" "$app"
as_user() {
    setpriv --reuid="$run_uid" --regid="$run_gid" --groups="$docker_gid" env HOME="$app/home" \
        PATH="$app/bin:$app/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "$@"
}
as_user test -x "$app/bin/apptainer" || die "user $run_uid cannot run $app/bin/apptainer"
snakemake_bin="$app/venv/bin/snakemake"
as_user "$snakemake_bin" --version >/dev/null || die "user $run_uid cannot run $snakemake_bin"
if ! (cd "$app/work" && as_user "$snakemake_bin" --snakefile "$scratch/tree/Snakefile" \
    --use-singularity --cores 2 --configfile "$scratch/tree/config/smoke.yaml") \
    >"$state/apptainer-smoke.log" 2>&1; then
    tail -n 60 "$state/apptainer-smoke.log" >&2
    die "the smoke workflow through the apptainer stand-in failed (log: $state/apptainer-smoke.log)"
fi
jobs_in_image=$(grep -c "Activating singularity image" "$state/apptainer-smoke.log" || true)
jobs_total=$(grep -c "^rule \|^localrule " "$state/apptainer-smoke.log" || true)
log "apptainer path: $jobs_in_image of $jobs_total jobs activated the image"
[[ $jobs_in_image -gt 0 ]] || die "no job ran in the image (log: $state/apptainer-smoke.log)"
python3 "$repo/.ci/compare-results.py" "$scratch/smoke/results" "$app/work/results" \
    --names image,apptainer || die "the apptainer path's results differ from the image's"
if [[ -n ${HALP_LOCAL_RUN:-} ]]; then
    python3 "$repo/.ci/compare-results.py" "$HALP_LOCAL_RUN/results" "$app/work/results" \
        --names local,apptainer || die "the apptainer path's results differ from the local run's"
fi

# --- 5. the outputs -------------------------------------------------------------------------

results="$scratch/smoke/results"
[[ -s "$results/tables/table1_linear.md" ]] || die "no results/tables/table1_linear.md"
tables=("$results"/tables/*.md)
for table in "${tables[@]}"; do
    [[ -s "$table" ]] || die "empty table ${table#"$scratch"/smoke/}"
done
not_ours=$(find "$scratch" \( ! -uid "$run_uid" -o ! -gid "$run_gid" \) -print)
[[ -z "$not_ours" ]] || die "files not owned by $run_uid:$run_gid:"$'\n'"$not_ours"
log "outputs: ${#tables[@]} tables; $(($(find "$scratch" | wc -l) - owned_before)) new files \
and folders, all owned by $run_uid:$run_gid"

# --- 6. report ------------------------------------------------------------------------------

size_mb() { "$docker" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f", $1 / 1e6}'; }
log "image $image: $(size_mb "$image") MB ($base_image $(size_mb "$base_image") MB, \
$rootfs_image $(size_mb "$rootfs_image") MB); build: base $base_seconds s, image $image_seconds s"
log "container check passed"
