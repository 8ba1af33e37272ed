#!/usr/bin/env bash
# The Slurm path for real (issue 16): a single-node Slurm cluster on this machine, with
# accounting (slurmdbd + MariaDB), and the smoke workflow run through profiles/slurm so that
# every rule is a Slurm job. Run as root on a Debian machine that reaches Debian's packages
# and PyPI; it installs what it needs, leaves no daemon running and exits non-zero on any
# problem, printing the daemons' logs when the cluster does not come up.
#
#   bash .ci/slurm.sh                            # standalone (runs its own local reference)
#   HALP_LOCAL_RUN=DIR bash .ci/slurm.sh         # compare with a finished local smoke run in DIR
#
# Checks:
#  1. every job of the smoke DAG is submitted with sbatch: each has a Slurm job id, a Slurm log,
#     and a sacct record (COMPLETED, account, partition) whose CPUs, memory and time limit are
#     the rule's threads, mem_mb and runtime as Snakemake computed them;
#  2. every number of every results/*.json equals the local run's (timings excepted);
#  3. a pretraining job killed with scancel after a few epochs fails with its Slurm job id and
#     log path in Snakemake's error, and a rerun resumes it from its checkpoint; its model and
#     metrics equal an uninterrupted run's;
#  4. pretraining with pretrain.gpus: 2 goes through the rule's torchrun launcher as one Slurm
#     job holding 2 (stand-in) GPUs; both ranks (gloo, CPU) train to the end with identical
#     parameters;
#  5. the sbatch arguments of GPU rules on a GPU configuration (pretrain.gpus: 4, a gpu_model)
#     map `gpu` to --gpus=<model>:<n>, with the rule's CPUs and no --ntasks-per-gpu; that
#     submission is refused by a wrapper, so nothing runs;
#  6. the cluster shuts down cleanly.
#
# The node declares 2 GPUs of gres type gpu with no device behind them (gres.conf Count only),
# so that a GPU rule's --gpus request can be scheduled here; the jobs themselves run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$SECONDS

cluster=halpci
account=halp-ci
partition=ci
db_port=${HALP_SLURM_DB_PORT:-43306}
conf_dir=/etc/slurm            # the jobs' nested srun reads the default slurm.conf path
marker="# written by halp-repro .ci/slurm.sh"

log() { printf '[slurm.sh %4ds] %s\n' "$((SECONDS - started))" "$*"; }

state=""
declare -A daemons=()         # name -> pid of the daemons started here
stuck=()                       # daemons that had to be killed
local_pid=""
show_daemon_logs() {
  [[ -n $state && -d $state/log ]] || return 0
  local f
  for f in "$state"/log/*.log; do
    [[ -s $f ]] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 25 "$f" >&2
  done
}
die() {
  echo "slurm.sh: FAILED: $*" >&2
  show_daemon_logs
  exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_for() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.5
  done
}

stop_daemons() {
  # slurmctld and slurmd end on `scontrol shutdown`; then SIGTERM, in reverse start order
  if [[ -n ${daemons[slurmctld]:-} ]]; then
    scancel --user=root >/dev/null 2>&1 || true
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  local name pid t0
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=${daemons[$name]:-}
    [[ -n $pid ]] || continue
    t0=$SECONDS
    while [[ $name == slurm* && $name != slurmdbd ]] && kill -0 "$pid" 2>/dev/null \
      && ((SECONDS - t0 < 10)); do sleep 0.2; done
    kill -TERM "$pid" 2>/dev/null || true
    t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < 30)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm.sh: $name ($pid) did not stop; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      stuck+=("$name")
    fi
    unset "daemons[$name]"
  done
}

cleanup() {
  local rc=$?
  if [[ -n $local_pid ]] && kill -0 "$local_pid" 2>/dev/null; then
    kill -TERM -- "-$local_pid" 2>/dev/null || kill -TERM "$local_pid" 2>/dev/null || true
  fi
  stop_daemons
  if [[ -f $conf_dir/slurm.conf ]] && grep -qF "$marker" "$conf_dir/slurm.conf"; then
    rm -f "$conf_dir/slurm.conf" "$conf_dir/gres.conf" "$conf_dir/slurmdbd.conf"
  fi
  if ((rc == 0)) && [[ -z ${HALP_SLURM_KEEP:-} && -n $state ]]; then
    rm -rf "$state"
  elif [[ -n $state ]]; then
    echo "slurm.sh: files kept in $state" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $EUID -eq 0 ]] || die "run as root (it installs packages and starts munged, slurmctld, ...)"
if [[ -e $conf_dir/slurm.conf ]] && ! grep -qF "$marker" "$conf_dir/slurm.conf"; then
  die "$conf_dir/slurm.conf exists and was not written by this script: not touching a real cluster"
fi

# ---------------------------------------------------------------- packages and Python
packages=(slurm-wlm munge slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  # policy-rc.d or no systemd: the packages' own services do not start; this script starts them
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi

state=$(mktemp -d /tmp/halp-slurm.XXXXXX)
chmod 755 "$state"             # the mysql user must reach its folders below
mkdir -p "$state"/{log,run,spool/ctld,spool/d,bin,work}

# The package and Snakemake: the active environment (CI's venv), else a new one here.
if python -c "import halp, snakemake" 2>/dev/null; then
  log "using the active Python environment ($(command -v python))"
else
  log "creating a virtual environment with the package"
  python3 -m venv "$state/venv"
  # shellcheck disable=SC1091
  . "$state/venv/bin/activate"
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[workflow,slurm]"
fi
# the Slurm executor plugin at the version pyproject's "slurm" extra pins (one source of truth)
mapfile -t slurm_reqs < <(python -c '
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(*extras["slurm"], sep="\n")')
python -m pip install -q "${slurm_reqs[@]}"
log "plugin: $(python -m pip show snakemake-executor-plugin-slurm | grep '^Version')," \
  "snakemake $(snakemake --version)"

# The reference: a local run of the smoke workflow, given or started now in the background
if [[ -n ${HALP_LOCAL_RUN:-} ]]; then
  local_dir=$(cd "$HALP_LOCAL_RUN" && pwd)
  [[ -s $local_dir/results/tables/table1_linear.md ]] || die "HALP_LOCAL_RUN=$local_dir: no finished smoke run"
else
  local_dir=$state/local
  mkdir -p "$local_dir"
  log "starting the local reference run in $local_dir"
  (cd "$local_dir" && exec setsid snakemake --snakefile "$repo/Snakefile" --cores 1 \
    --configfile "$repo/config/smoke.yaml" >"$local_dir/snakemake.log" 2>&1) &
  local_pid=$!
fi

# ---------------------------------------------------------------- the cluster
host=$(hostname -s)
getent hosts "$host" >/dev/null || die "the host name $host does not resolve (add it to /etc/hosts)"

log "munge"
install -d -o munge -g munge -m 0755 /run/munge
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/log/munge
chmod 0711 /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  setpriv --reuid=munge --regid=munge --init-groups mungekey --create
fi
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged is already running; using it"
else
  setpriv --reuid=munge --regid=munge --init-groups \
    /usr/sbin/munged --foreground 2>"$state/log/munged.log" &
  daemons[munged]=$!
  wait_for 20 "munged" bash -c 'munge -n </dev/null | unmunge'
fi

log "MariaDB on 127.0.0.1:$db_port (private data folder)"
install -d -o mysql -g mysql "$state/mysql" "$state/mysql-run"
install -o mysql -g mysql -m 0644 /dev/null "$state/log/mariadb.log"
mariadb-install-db --user=mysql --datadir="$state/mysql" --auth-root-authentication-method=socket \
  --skip-test-db >"$state/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
/usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$state/mysql" \
  --socket="$state/mysql-run/mysqld.sock" --pid-file="$state/mysql-run/mysqld.pid" \
  --bind-address=127.0.0.1 --port="$db_port" --skip-name-resolve \
  --innodb-buffer-pool-size=64M --innodb-use-native-aio=0 \
  --log-error="$state/log/mariadb.log" &
daemons[mariadbd]=$!
sql() { mariadb --no-defaults --socket="$state/mysql-run/mysqld.sock" -u root "$@"; }
wait_for 60 "MariaDB" sql -e "SELECT 1"
db_pass=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
sql -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

log "slurm.conf, gres.conf, slurmdbd.conf in $conf_dir"
read -r cpus sockets cores threads memory < <(slurmd -C | sed -n 1p | python -c '
import sys
f = dict(kv.split("=", 1) for kv in sys.stdin.read().split())
print(f["CPUs"], f["SocketsPerBoard"], f["CoresPerSocket"], f["ThreadsPerCore"], f["RealMemory"])')
memory=$((memory * 9 / 10))    # leave some to the machine itself
install -d "$conf_dir"
cat >"$conf_dir/slurm.conf" <<EOF
$marker: a single-node test cluster
ClusterName=$cluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$state/dev"
touch "$state/dev/gpu0" "$state/dev/gpu1"
cat >"$conf_dir/gres.conf" <<EOF
$marker: 2 stand-in GPUs (plain files), so that --gpus requests can be scheduled
NodeName=$host Name=gpu File=$state/dev/gpu[0-1]
EOF
(
  umask 077
  cat >"$conf_dir/slurmdbd.conf" <<EOF
$marker
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
LogFile=$state/log/slurmdbd.log
PidFile=$state/run/slurmdbd.pid
EOF
)

log "slurmdbd, accounts, slurmctld, slurmd"
slurmdbd -D 2>"$state/log/slurmdbd-stderr.log" &
daemons[slurmdbd]=$!
wait_for 60 "slurmdbd" sacctmgr -n list cluster
sacctmgr -i add cluster "$cluster" >/dev/null
sacctmgr -i add account "$account" Description="halp-repro CI" Organization=halp-repro >/dev/null
sacctmgr -i add user root Account="$account" DefaultAccount="$account" >/dev/null
slurmctld -D 2>"$state/log/slurmctld-stderr.log" &
daemons[slurmctld]=$!
wait_for 30 "slurmctld" scontrol ping
slurmd -D 2>"$state/log/slurmd-stderr.log" &
daemons[slurmd]=$!
wait_for 60 "node $host idle" bash -c "sinfo -h -n '$host' -o '%T' | grep -qx idle"
sinfo
probe=$(sbatch --parsable -A "$account" -p "$partition" -t 1 --mem 100 -o /dev/null --wrap true)
wait_for 60 "probe job $probe in sacct" bash -c \
  "sacct -n -X -j '$probe' -o State%20 | grep -q COMPLETED"
log "cluster up: probe job $probe completed and is in sacct"

# ---------------------------------------------------------------- the profile, site values filled in
# profiles/slurm as a user edits it: account and partitions filled in. The container lines are
# dropped: this node has no Apptainer and no image; the jobs use this environment (as on a
# cluster where the virtual environment lies on the shared filesystem).
profile=$state/work/profiles/slurm
mkdir -p "$profile"
python - "$repo/profiles/slurm/config.yaml" "$profile/config.yaml" "$account" "$partition" <<'PY'
import sys

import yaml

src, dst, account, partition = sys.argv[1:]
profile = yaml.safe_load(open(src))
if profile.get("executor") != "slurm":
    sys.exit(f"{src}: executor is not slurm")
filled = []
groups = [profile["default-resources"], *profile.get("set-resources", {}).values()]
for resources in groups:
    for key, value in resources.items():
        if "CHANGE_ME" in str(value):
            resources[key] = {"slurm_account": account, "slurm_partition": partition}[key]
            filled.append(key)
if "slurm_account" not in filled or "slurm_partition" not in filled:
    sys.exit(f"{src}: expected CHANGE_ME placeholders for slurm_account and slurm_partition")
for key in ("software-deployment-method", "apptainer-args"):
    profile.pop(key, None)
with open(dst, "w") as out:
    yaml.safe_dump(profile, out, sort_keys=False)
print(f"filled {len(filled)} placeholders")
PY

# sbatch as Snakemake calls it: every call recorded, then passed on (or refused, on request)
cat >"$state/bin/sbatch" <<EOF
#!/usr/bin/env bash
printf '%s\n' "\$*" >>"$state/sbatch-calls.txt"
if [[ -n \${HALP_SBATCH_REFUSE:-} ]]; then
  echo "sbatch: refused by the .ci/slurm.sh wrapper (argument check only)" >&2
  exit 1
fi
exec /usr/bin/sbatch "\$@"
EOF
chmod +x "$state/bin/sbatch"
export PATH="$state/bin:$PATH"

# extra configuration: two identical long baseline runs (one to kill, one straight), a
# 2-process run, and a GPU variant that is only submitted to the refusing wrapper
cat >"$state/work/extra.yaml" <<'EOF'
variants:
  baseline-killed: {method: baseline, set: {optim.epochs: 60, log.knn_every: 20}}
  baseline-straight: {method: baseline, set: {optim.epochs: 60, log.knn_every: 20}}
  halp-ddp: {method: halp, set: {optim.epochs: 4}}
  halp-gpu: {method: halp, set: {}}
EOF
work=$state/work
smk() {
  (cd "$work" && snakemake --snakefile "$repo/Snakefile" --workflow-profile profiles/slurm \
    --configfile "$repo/config/smoke.yaml" "$work/extra.yaml" \
    --slurm-keep-successful-logs --slurm-init-seconds-before-status-checks 2 "$@")
}

# ---------------------------------------------------------------- 1. the smoke DAG on Slurm
log "the smoke workflow on Slurm (and the uninterrupted long baseline run)"
smk all runs/ntu60_xsub_baseline-straight/final.pt >"$state/smoke.log" 2>&1 \
  || { tail -n 60 "$state/smoke.log" >&2; die "the smoke workflow failed on Slurm"; }
test -s "$work/results/tables/table1_linear.md" || die "no table1_linear.md"
python - "$state/smoke.log" "$account" "$partition" <<'PY' || die "job/sacct check"
import re
import subprocess
import sys
from pathlib import Path

log_path, account, partition = sys.argv[1:]
text = Path(log_path).read_text()
# the DAG's jobs per rule (Snakemake's "Job stats"); every one but `all` must go to Slurm
table = re.search(r"Job stats:\n.*?-\n(.*?)\ntotal", text, re.S).group(1)
expected = {rule: int(n) for rule, n in (line.split() for line in table.splitlines())}
expected.pop("all")
submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", text)
slurm = {}
for slurm_id, slurm_log in submitted:
    # the job's own Snakemake prints the rule, its threads and resources in the Slurm log
    log_text = Path(slurm_log).read_text() if Path(slurm_log).is_file() else ""
    block = re.search(r"^rule (\w+):\n((?:    .*\n)+)", log_text, re.M)
    if block is None or f"/rule_{block.group(1)}/" not in slurm_log:
        sys.exit(f"Slurm job {slurm_id}: no rule shown in its Slurm log {slurm_log}")
    threads = re.search(r"^    threads: (\d+)", block.group(2), re.M)
    res = re.search(r"^    resources: (.*)$", block.group(2), re.M).group(1)
    resources = dict(kv.split("=", 1) for kv in res.split(", "))
    slurm[slurm_id] = {
        "rule": block.group(1),
        "threads": int(threads.group(1)) if threads else 1,
        "mem_mb": int(resources["mem_mb"]),
        "runtime": int(resources["runtime"]),
    }
per_rule = {}
for job in slurm.values():
    per_rule[job["rule"]] = per_rule.get(job["rule"], 0) + 1
if per_rule != expected:
    sys.exit(f"jobs submitted to Slurm per rule {per_rule}, the DAG's {expected}")
fields = "JobIDRaw,State,ExitCode,Account,Partition,AllocCPUS,ReqMem,TimelimitRaw,Comment"
rows = subprocess.run(
    ["sacct", "-X", "-n", "-P", "-j", ",".join(slurm), "-o", fields],
    check=True,
    capture_output=True,
    text=True,
).stdout.splitlines()
records = {r.split("|")[0]: dict(zip(fields.split(","), r.split("|"), strict=True)) for r in rows}
problems = []
for slurm_id, job in slurm.items():
    rec = records.get(slurm_id)
    want = {
        "State": "COMPLETED",
        "ExitCode": "0:0",
        "Account": account,
        "Partition": partition,
        "AllocCPUS": str(job["threads"]),
        "ReqMem": f"{job['mem_mb']}M",
        "TimelimitRaw": str(job["runtime"]),
    }
    if rec is None:
        problems.append(f"Slurm job {slurm_id} ({job['rule']}): no sacct record")
        continue
    bad = {k: (rec[k], v) for k, v in want.items() if rec[k] != v}
    if bad or not rec["Comment"].startswith(f"rule_{job['rule']}"):
        problems.append(f"Slurm job {slurm_id} ({job['rule']}): (sacct, rule) {bad}")
if problems:
    sys.exit("\n".join(problems))
rules = sorted({j["rule"] for j in slurm.values()})
ids = sorted(map(int, slurm))
print(f"{len(slurm)} Slurm jobs (ids {ids[0]}..{ids[-1]}), as many per rule as the DAG has;")
print("each has a Slurm log and a COMPLETED sacct record with the rule's CPUs, mem, runtime:")
for rule in rules:
    job = next(j for j in slurm.values() if j["rule"] == rule)
    print(f"  {rule}: cpus {job['threads']}, mem {job['mem_mb']}M, runtime {job['runtime']} min")
PY

# ---------------------------------------------------------------- 2. results equal a local run's
if [[ -n $local_pid ]]; then
  log "waiting for the local reference run"
  wait "$local_pid" || { tail -n 40 "$local_dir/snakemake.log" >&2; die "the local run failed"; }
  local_pid=""
fi
python .ci/compare-results.py "$local_dir/results" "$work/results" --names local,slurm \
  || die "results differ from the local run's"

# ---------------------------------------------------------------- 3. scancel mid-pretraining, resume
log "killing a pretraining job with scancel, then resuming it"
run_dir=$work/runs/ntu60_xsub_baseline-killed
# Status by squeue for this run: sacct reports a cancelled job as "CANCELLED by <uid>", which
# plugin 2.6.1 does not recognise (it keeps waiting for that job); squeue says "CANCELLED".
# On a real cluster the same applies to a job cancelled by hand (profiles/README.md).
smk --slurm-status-command squeue runs/ntu60_xsub_baseline-killed/final.pt \
  >"$state/killed.log" 2>&1 &
smk_pid=$!
killed_id=""
t0=$SECONDS
while [[ -z $killed_id ]]; do
  ((SECONDS - t0 < 240)) || die "the long pretraining job did not reach epoch 3"
  kill -0 "$smk_pid" 2>/dev/null || die "Snakemake ended before the kill: $(tail -n 20 "$state/killed.log")"
  if [[ -f $run_dir/checkpoint.pt && $(wc -l <"$run_dir/metrics.jsonl" 2>/dev/null || echo 0) -ge 3 ]]; then
    killed_id=$(squeue -h -o '%i %k' | awk '/baseline-killed/ {print $1}')
    [[ -n $killed_id ]] || die "the long pretraining finished before it could be cancelled"
  fi
  sleep 0.3
done
scancel "$killed_id"
epochs_done=$(wc -l <"$run_dir/metrics.jsonl")
if wait "$smk_pid"; then die "Snakemake succeeded although job $killed_id was cancelled"; fi
[[ ! -e $run_dir/final.pt ]] || die "final.pt exists after the kill: the job was not interrupted"
grep -q "SLURM-job '$killed_id' failed, SLURM status is: 'CANCELLED'" "$state/killed.log" \
  || die "Snakemake's error does not name Slurm job $killed_id as CANCELLED"
grep -q "slurm_logs/rule_pretrain/.*/$killed_id.log" "$state/killed.log" \
  || die "Snakemake's error does not give the log path of job $killed_id"
sacct -n -X -j "$killed_id" -o State%20 | grep -q CANCELLED || die "sacct: $killed_id not CANCELLED"
log "Slurm job $killed_id cancelled after epoch $epochs_done of 60; Snakemake named it and its log"
smk runs/ntu60_xsub_baseline-killed/final.pt >"$state/resumed.log" 2>&1 \
  || { tail -n 40 "$state/resumed.log" >&2; die "the rerun after the kill failed"; }
resumed_from=$(sed -n 's/.*resuming .* from epoch \([0-9]*\).*/\1/p' \
  "$work/logs/pretrain/ntu60_xsub_baseline-killed.log" | tail -n 1)
[[ -n $resumed_from && $resumed_from -gt 0 ]] || die "the rerun did not resume from a checkpoint"
python - "$work/runs" <<'PY' || die "the resumed run differs from the uninterrupted one"
import json
import sys
from pathlib import Path

import torch

runs = Path(sys.argv[1])
a = torch.load(runs / "ntu60_xsub_baseline-killed/final.pt", weights_only=False)
b = torch.load(runs / "ntu60_xsub_baseline-straight/final.pt", weights_only=False)
assert a["epoch"] == b["epoch"] == 60, (a["epoch"], b["epoch"])
diff = [k for k in b["model"] if not torch.equal(a["model"][k], b["model"][k])]
assert a["model"].keys() == b["model"].keys() and not diff, diff[:5]


def rows(run):
    lines = (runs / run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


assert rows("ntu60_xsub_baseline-killed") == rows("ntu60_xsub_baseline-straight")
print(f"resumed run == uninterrupted run: {len(b['model'])} tensors and 60 metric rows equal")
PY
log "the rerun resumed from epoch $resumed_from"

# ---------------------------------------------------------------- 4. torchrun, 2 processes
log "pretrain.gpus: 2 through the rule's torchrun launcher (gloo on the CPU)"
cat >"$work/ddp.yaml" <<'EOF'
pretrain: {gpus: 2, threads: 2}
EOF
# a hook that torchrun's workers import at start (sitecustomize): at exit each rank saves its
# model's state, so the ranks can be compared; inert in every other process
mkdir -p "$state/hook" "$state/ranks"
cat >"$state/hook/sitecustomize.py" <<'PY'
"""Test hook of .ci/slurm.sh: each torchrun worker saves its final model state at exit."""

import atexit
import os

if os.environ.get("HALP_CI_RANK_STATE") and "RANK" in os.environ:
    import torch

    from halp.methods.model import PretrainModel

    _seen = {}
    _prepare = PretrainModel.prepare_step

    def _capture(self, *args, **kwargs):
        _seen["model"] = self
        return _prepare(self, *args, **kwargs)

    def _save():
        if "model" in _seen:
            state = {k: v.detach().clone() for k, v in _seen["model"].state_dict().items()}
            out = os.path.join(os.environ["HALP_CI_RANK_STATE"], f"rank{os.environ['RANK']}.pt")
            torch.save(state, out)

    PretrainModel.prepare_step = _capture
    atexit.register(_save)
PY
: >"$state/sbatch-calls.txt"
(
  export PYTHONPATH="$state/hook${PYTHONPATH:+:$PYTHONPATH}" HALP_CI_RANK_STATE="$state/ranks"
  smk --configfile "$repo/config/smoke.yaml" "$work/extra.yaml" "$work/ddp.yaml" \
    -- runs/ntu60_xsub_halp-ddp/final.pt >"$state/ddp.log" 2>&1
) || { tail -n 60 "$state/ddp.log" >&2; die "the 2-process pretraining failed on Slurm"; }
ddp_id=$(sed -n 's/.*submitted with SLURM jobid \([0-9]*\).*/\1/p' "$state/ddp.log")
[[ -n $ddp_id ]] || die "the 2-process pretraining was not submitted to Slurm"
grep -q -- "--gpus=2" "$state/sbatch-calls.txt" || die "sbatch was not asked for --gpus=2"
! grep -q -- "--ntasks-per-gpu" "$state/sbatch-calls.txt" || die "--ntasks-per-gpu in sbatch call"
grep -q -- "--cpus-per-task=2" "$state/sbatch-calls.txt" || die "no --cpus-per-task=2"
sacct -n -X -j "$ddp_id" -o AllocTRES%80 | grep -q "gres/gpu=2" || die "sacct: no gres/gpu=2"
grep -Eq "torchrun --standalone --nproc_per_node=2 -m halp (-- )?pretrain" \
  "$work"/.snakemake/slurm_logs/rule_pretrain/*halp-ddp*/"$ddp_id.log" \
  || die "the Slurm job did not run torchrun"
finished=$(grep -c "pretraining finished" "$work/logs/pretrain/ntu60_xsub_halp-ddp.log" || true)
[[ $finished -eq 2 ]] || die "$finished of 2 ranks report 'pretraining finished'"
python - "$state/ranks" "$work/runs/ntu60_xsub_halp-ddp/final.pt" <<'PY' || die "ranks disagree"
import sys
from pathlib import Path

import torch

ranks, final = Path(sys.argv[1]), sys.argv[2]
a = torch.load(ranks / "rank0.pt", weights_only=True)
b = torch.load(ranks / "rank1.pt", weights_only=True)
ckpt = torch.load(final, weights_only=False)
assert len(ckpt["rng"]["per_rank"]) == 2, "the checkpoint lacks rank 1's random state"
# BatchNorm running statistics are per process on the CPU (no SyncBatchNorm there)
keys = [k for k in a if "running_" not in k]
assert len(keys) > 20 and a.keys() == b.keys()
diff = [k for k in keys if not torch.equal(a[k], b[k])]
assert not diff, f"ranks differ in {diff[:5]}"
diff = [k for k in a if not torch.equal(a[k], ckpt["model"][k])]
assert not diff, f"rank 0 differs from final.pt in {diff[:5]}"
print(f"ranks 0 and 1 agree on {len(keys)} tensors; rank 0 == final.pt (epoch {ckpt['epoch']})")
PY
log "Slurm job $ddp_id: torchrun, 2 ranks, gres/gpu=2"

# ---------------------------------------------------------------- 5. GPU sbatch arguments, not run
log "sbatch arguments of GPU rules on a GPU configuration (submission refused)"
cat >"$work/gpu.yaml" <<'EOF'
pretrain: {gpus: 4, threads: 8, mem_mb: 32000, runtime: 2880}
EOF
: >"$state/sbatch-calls.txt"
if (
  export HALP_SBATCH_REFUSE=1
  smk --configfile "$repo/config/smoke.yaml" "$work/extra.yaml" "$work/gpu.yaml" \
    --set-resources "pretrain:slurm_partition=$partition" pretrain:tasks_per_gpu=0 \
    pretrain:gpu_model=a100 -- runs/ntu60_xsub_halp-gpu/final.pt >"$state/gpu.log" 2>&1
); then
  die "the refused submission did not fail"
fi
python - "$state/sbatch-calls.txt" "$account" "$partition" <<'PY' || die "GPU sbatch arguments"
import shlex
import sys

calls = [line for line in open(sys.argv[1]) if line.strip()]
assert len(calls) == 1, f"{len(calls)} sbatch calls, expected the pretrain job only"
args = shlex.split(calls[0].split(" --wrap")[0])
want = ["--gpus=a100:4", "--cpus-per-task=8", "--mem", "32000", "-t", "2880"]
want += ["-A", sys.argv[2], "-p", sys.argv[3]]
missing = [w for w in want if w not in args]
assert not missing, f"missing {missing} in {args}"
assert "--ntasks-per-gpu" not in " ".join(args), args
print("pretrain (gpus 4, gpu_model a100):", " ".join(args))
PY
grep -q "SLURM sbatch failed" "$state/gpu.log" || die "Snakemake did not report the refused sbatch"

# ---------------------------------------------------------------- 6. shutdown
log "shutting the cluster down"
squeue -h | grep -q . && die "jobs left in the queue: $(squeue)"
stop_daemons
((${#stuck[@]} == 0)) || die "did not stop on request: ${stuck[*]}"
for d in slurmctld slurmd slurmstepd slurmdbd; do
  ! pgrep -x "$d" >/dev/null || die "$d still running after the shutdown"
done
log "all Slurm checks passed in $((SECONDS - started)) s"
