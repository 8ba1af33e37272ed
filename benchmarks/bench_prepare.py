"""Benchmark of ``halp prepare``: parse + normalise speed and peak memory.

Two measurements, printed side by side in one run:

1. Parse + normalise speed of ``halp`` (``ntu.parse_skeleton`` then
   ``skeleton.process_sample``) against a reference recipe written below in the style of
   the 2s-AGCN / CMD generator (line-by-line reader building a dict per joint, Python
   loops per person, frame and joint for the normalisation). Both run on the same files
   in one process on one core; before timing, every file is checked to give the same
   array from both (``np.allclose(atol=1e-4)``).
2. Peak resident memory of ``halp prepare ntu60 --workers 2`` run in a subprocess on a
   synthetic dataset and on one ten times larger: streaming keeps it flat.

Usage::

    .venv/bin/python benchmarks/bench_prepare.py [--reps 5] [--skip-memory]
        [--realdata PATH] [--mem-classes 60] [--mem-per-class 10]
"""

from __future__ import annotations

import os

# one core: set before numpy is imported anywhere (also inherited by the subprocesses)
for _var in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from halp.data.ntu import parse_skeleton  # noqa: E402
from halp.data.skeleton import process_sample  # noqa: E402

MAX_BODY = 4
NUM_PERSON = 2
NUM_JOINT = 25
MAX_FRAME = 300
BODY_KEYS = (
    "bodyID",
    "clipedEdges",
    "handLeftConfidence",
    "handLeftState",
    "handRightConfidence",
    "handRightState",
    "isResticted",
    "leanX",
    "leanY",
    "trackingState",
)
JOINT_KEYS = (
    "x",
    "y",
    "z",
    "depthX",
    "depthY",
    "colorX",
    "colorY",
    "orientationW",
    "orientationX",
    "orientationY",
    "orientationZ",
    "trackingState",
)


# ------------------------------------------------------------------ reference recipe


def ref_read_sequence(path: Path) -> dict:
    """Read a ``.skeleton`` file line by line into nested dicts, as the original reader."""
    with open(path) as f:
        sequence: dict = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame: dict = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                values = f.readline().split()
                body: dict = {key: float(values[k]) for k, key in enumerate(BODY_KEYS)}
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    fields = f.readline().split()
                    joint = {key: float(fields[k]) for k, key in enumerate(JOINT_KEYS)}
                    body["jointInfo"].append(joint)
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    return sequence


def ref_motion_energy(slot: np.ndarray) -> float:
    """std(x) + std(y) + std(z) over the frames with a non-zero joint sum; 0 if none."""
    valid = slot[slot.sum(-1).sum(-1) != 0]
    if len(valid) == 0:
        return 0.0
    return float(valid[:, :, 0].std() + valid[:, :, 1].std() + valid[:, :, 2].std())


def ref_read_xyz(path: Path) -> np.ndarray:
    """(2, F, 25, 3): the 4 body slots filled joint by joint, top 2 by motion energy."""
    sequence = ref_read_sequence(path)
    data = np.zeros((MAX_BODY, sequence["numFrame"], NUM_JOINT, 3))
    for n, frame in enumerate(sequence["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, joint in enumerate(body["jointInfo"]):
                if m < MAX_BODY and j < NUM_JOINT:
                    data[m, n, j, :] = [joint["x"], joint["y"], joint["z"]]
    energy = np.array([ref_motion_energy(slot) for slot in data])
    order = energy.argsort()[::-1][:NUM_PERSON]
    return data[order]


def ref_rotation_matrix(axis: np.ndarray, theta: float) -> np.ndarray:
    """Euler-Rodrigues matrix rotating by ``theta`` about ``axis``; identity if either ~0."""
    if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / math.sqrt(np.dot(axis, axis))
    a = math.cos(theta / 2.0)
    b, c, d = -axis * math.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array(
        [
            [aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
            [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
            [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc],
        ]
    )


def ref_angle_between(v1: np.ndarray, v2: np.ndarray) -> float:
    """Angle in radians between two vectors; 0 if either is ~0."""
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0.0
    u1 = v1 / np.linalg.norm(v1)
    u2 = v2 / np.linalg.norm(v2)
    return float(np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0)))


def ref_rotate_all(s: np.ndarray, bottom: int, top: int, target: np.ndarray) -> None:
    """Rotate every joint of every non-empty frame so person 0's frame-0 bone -> target."""
    vector = s[0, 0, top] - s[0, 0, bottom]
    axis = np.cross(vector, target)
    matrix = ref_rotation_matrix(axis, ref_angle_between(vector, target))
    for i_p, person in enumerate(s):
        if person.sum() == 0:
            continue
        for i_f, frame in enumerate(person):
            if frame.sum() == 0:
                continue
            for i_j, joint in enumerate(frame):
                s[i_p, i_f, i_j] = np.dot(matrix, joint)


def ref_normalise(s: np.ndarray) -> None:
    """The 2s-AGCN ``pre_normalization`` of one (M, T, V, C) sample, in place.

    Same structure as the original: a per-person / per-frame loop for the padding, a
    per-person masked subtraction for the centring, per-joint ``np.dot`` for the
    rotations. As ``halp``'s default (``compaction="all"``), every valid frame is moved
    to the front, not only when frame 0 is empty.
    """
    if s.sum() == 0:
        return
    num_frames = s.shape[1]
    # 1. per person: move the valid frames to the front, then loop-pad from the first gap
    for i_p, person in enumerate(s):
        if person.sum() == 0:
            continue
        valid = person.sum(-1).sum(-1) != 0
        frames = person[valid].copy()
        person *= 0
        person[: len(frames)] = frames
        for i_f, frame in enumerate(person):
            if frame.sum() == 0:
                if person[i_f:].sum() == 0:
                    rest = num_frames - i_f
                    copies = int(np.ceil(rest / i_f))
                    s[i_p, i_f:] = np.concatenate([person[:i_f]] * copies, 0)[:rest]
                    break
    # 2. subtract person 0's spine middle (joint 1) per frame from every non-zero joint
    centre = s[0][:, 1:2, :].copy()
    for i_p, person in enumerate(s):
        if person.sum() == 0:
            continue
        mask = (person.sum(-1) != 0).reshape(num_frames, NUM_JOINT, 1)
        s[i_p] = (s[i_p] - centre) * mask
    # 3. spine base (0) -> spine middle (1) of person 0 in frame 0 along +z
    ref_rotate_all(s, 0, 1, np.array([0.0, 0.0, 1.0]))
    # 4. right shoulder (8) - left shoulder (4) of person 0 in frame 0 along +x
    ref_rotate_all(s, 4, 8, np.array([1.0, 0.0, 0.0]))


def reference_sample(path: Path) -> np.ndarray:
    """One file -> float32 (3, 300, 25, 2) by the reference recipe."""
    data = ref_read_xyz(path)
    sample = np.zeros((NUM_PERSON, MAX_FRAME, NUM_JOINT, 3), dtype=np.float32)
    keep = min(data.shape[1], MAX_FRAME)
    sample[:, :keep] = data[:, :keep]
    ref_normalise(sample)
    return sample.transpose(3, 1, 2, 0)


def halp_sample(path: Path) -> np.ndarray:
    """One file -> float32 (3, 300, 25, 2) by ``halp``."""
    return process_sample(parse_skeleton(path.read_bytes(), str(path)))


# ------------------------------------------------------------------------- speed


def find_files(realdata: Path, workdir: Path) -> tuple[list[Path], str]:
    folder = realdata / "ntu_raw_samples" / "nturgb+d_skeletons"
    files = sorted(folder.glob("*.skeleton")) if folder.is_dir() else []
    if files:
        return files, f"{len(files)} real files"
    from halp.data.synthetic import synth_ntu

    print(f"no real NTU files under {folder}; using synthetic ones")
    return synth_ntu(workdir / "speed", classes=6, per_class=3, seed=0), "18 synthetic files"


def check_equal(files: list[Path]) -> None:
    """Both recipes must give the same array for every file (atol 1e-4)."""
    bad = []
    for path in files:
        ref, ours = reference_sample(path), halp_sample(path)
        if ref.shape != ours.shape or not np.allclose(ref, ours, atol=1e-4):
            diff = np.abs(ref - ours).max() if ref.shape == ours.shape else float("nan")
            bad.append(f"{path.name}: shapes {ref.shape} / {ours.shape}, max |diff| {diff:.3g}")
    if bad:
        sys.exit("reference and halp arrays differ:\n  " + "\n  ".join(bad))
    print(f"checked: reference == halp (allclose, atol 1e-4) on all {len(files)} files")


def time_all(fn, files: list[Path]) -> tuple[float, list[float]]:
    """Seconds for ``fn`` over all files, and per file."""
    per_file = []
    for path in files:
        start = time.perf_counter()
        fn(path)
        per_file.append(time.perf_counter() - start)
    return sum(per_file), per_file


def bench_speed(files: list[Path], reps: int) -> tuple[float, float]:
    totals: dict[str, list[float]] = {"reference": [], "halp": []}
    per_file: dict[str, list[list[float]]] = {"reference": [], "halp": []}
    fns = {"reference": reference_sample, "halp": halp_sample}
    for fn in fns.values():  # warm-up (imports, page cache)
        time_all(fn, files[:2])
    for rep in range(reps):
        order = ("reference", "halp") if rep % 2 == 0 else ("halp", "reference")
        for name in order:
            total, each = time_all(fns[name], files)
            totals[name].append(total)
            per_file[name].append(each)
        print(
            f"  rep {rep + 1}/{reps}: reference {totals['reference'][-1] * 1e3:8.1f} ms, "
            f"halp {totals['halp'][-1] * 1e3:7.1f} ms"
        )
    ref_ms = statistics.median(totals["reference"]) * 1e3
    ours_ms = statistics.median(totals["halp"]) * 1e3
    print(f"\n  {'file':<24}{'frames':>7}{'reference ms':>14}{'halp ms':>10}{'ratio':>8}")
    for i, path in enumerate(files):
        r = statistics.median(rep[i] for rep in per_file["reference"]) * 1e3
        h = statistics.median(rep[i] for rep in per_file["halp"]) * 1e3
        frames = int(path.read_text().split(None, 1)[0])
        print(f"  {path.stem:<24}{frames:>7}{r:>14.2f}{h:>10.2f}{r / h:>7.1f}x")
    return ref_ms, ours_ms


# ------------------------------------------------------------------------ memory

# Runs ``halp.cli.main`` and reports the peak RSS of itself (the main process) and of
# its waited-for children: the pool workers, joined when the pool closes;
# RUSAGE_CHILDREN gives the largest single child, not a sum. The main process reads
# VmHWM (Linux) rather than ru_maxrss: Linux carries ru_maxrss across fork and exec,
# so a fresh interpreter would report its parent's peak if that were larger.
WRAPPER = """
import resource, sys
from halp.cli import main
rc = main(sys.argv[1:])
usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as fh:
        usage_self = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
except OSError:
    pass
usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"@@RSS {usage_self} {usage_children} {rc}")
"""


def run_cli(argv: list[str], expect_rc: int = 0) -> tuple[float, float, float]:
    """Run ``halp <argv>`` in a fresh interpreter; (main MiB, worker MiB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RSS")]
    if proc.returncode != 0 or not lines or int(lines[-1].split()[3]) != expect_rc:
        sys.exit(f"halp {' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    _, self_kib, child_kib, _ = lines[-1].split()
    unit = 1024 * 1024 if platform.system() == "Darwin" else 1024  # bytes on macOS, else KiB
    return int(self_kib) / unit, int(child_kib) / unit, seconds


def prepare_argv(raw: Path, out: Path, workers: int) -> list[str]:
    argv = ["-q", "prepare", "ntu60", "--raw", str(raw), "--out", str(out)]
    return [*argv, "--workers", str(workers)]


def bench_memory(workdir: Path, classes: int, per_class: int, workers: int) -> dict:
    """Peak RSS of an import-only baseline and of prepare on N and 10 N samples."""
    import shutil

    from halp.data.synthetic import synth_ntu

    # baseline: the same command failing on a missing --raw, after the CLI's imports
    base_main, _, _ = run_cli(prepare_argv(workdir / "absent", workdir / "o", workers), 2)
    print(f"  baseline (interpreter + halp CLI imports, no data): {base_main:.1f} MiB")
    results = {"baseline": base_main, "runs": []}
    for pc in (per_class, per_class * 10):
        raw, out = workdir / f"raw_{pc}", workdir / f"out_{pc}"
        start = time.perf_counter()
        files = synth_ntu(raw, classes=classes, per_class=pc, seed=0)
        made = time.perf_counter() - start
        main_mib, child_mib, seconds = run_cli(prepare_argv(raw, out, workers))
        run = {
            "samples": len(files),
            "main": main_mib,
            "worker": child_mib,
            "out_bytes": sum(p.stat().st_size for p in out.rglob("*.npy")),
            "raw_bytes": sum(p.stat().st_size for p in files),
        }
        results["runs"].append(run)
        print(
            f"  {run['samples']:>5} samples (raw {run['raw_bytes'] / 1e6:.0f} MB, synthesised in "
            f"{made:.0f} s): prepare {seconds:.1f} s, peak RSS main {main_mib:.1f} MiB, "
            f"largest worker {child_mib:.1f} MiB, output {run['out_bytes'] / 1e6:.0f} MB"
        )
        shutil.rmtree(raw)
        shutil.rmtree(out)
    return results


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timing repetitions (median)")
    parser.add_argument("--skip-memory", action="store_true", help="only the speed part")
    parser.add_argument(
        "--realdata",
        type=Path,
        default=Path(os.environ.get("HALP_REALDATA", "/work/shared/realdata")),
        help="folder holding ntu_raw_samples/nturgb+d_skeletons/ (default: $HALP_REALDATA "
        "or /work/shared/realdata); synthetic files are used if it has none",
    )
    parser.add_argument(
        "--mem-classes", type=int, default=60, help="classes of the synthetic memory datasets"
    )
    parser.add_argument(
        "--mem-per-class",
        type=int,
        default=10,
        help="samples per class of the small memory dataset; the large one has 10x",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers of the memory runs")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {platform.machine()}, {cores} core(s) available, Python "
        f"{platform.python_version()}, numpy {np.__version__}"
    )
    summary = []
    with tempfile.TemporaryDirectory(prefix="halp_bench_") as tmp:
        workdir = Path(tmp)
        files, what = find_files(args.realdata, workdir)
        print(f"\n[1] parse + normalise, one core, {what}, median of {args.reps} reps")
        check_equal(files)
        ref_ms, ours_ms = bench_speed(files, args.reps)
        n = len(files)
        summary.append(
            f"parse+normalise: reference {ref_ms:.1f} ms ({ref_ms / n:.1f} ms/file), "
            f"ours {ours_ms:.1f} ms ({ours_ms / n:.2f} ms/file) over {what} "
            f"-> {ref_ms / ours_ms:.1f}x faster (1 core)"
        )
        if not args.skip_memory:
            print(f"\n[2] peak RSS of `halp prepare ntu60 --workers {args.workers}` (subprocess)")
            mem = bench_memory(workdir, args.mem_classes, args.mem_per_class, args.workers)
            small, large = mem["runs"]
            base = mem["baseline"]
            in_ram = large["samples"] * 3 * MAX_FRAME * NUM_JOINT * NUM_PERSON * 4 / 2**20
            print(
                f"  (for scale: one in-RAM (N, 3, 300, 25, 2) float32 array of the "
                f"{large['samples']} samples is {in_ram:.0f} MiB)"
            )
            summary.append(
                f"prepare peak RSS (main): {small['samples']} samples {small['main']:.1f} MiB, "
                f"{large['samples']} samples {large['main']:.1f} MiB "
                f"-> ratio {large['main'] / small['main']:.2f} "
                f"(output {small['out_bytes'] / 1e6:.0f} MB vs {large['out_bytes'] / 1e6:.0f} MB)"
            )
            summary.append(
                f"  above the {base:.1f} MiB import baseline: {small['main'] - base:.1f} MiB vs "
                f"{large['main'] - base:.1f} MiB; largest worker {small['worker']:.1f} MiB vs "
                f"{large['worker']:.1f} MiB -> ratio {large['worker'] / small['worker']:.2f}"
            )
    print("\n" + "=" * 30 + " summary " + "=" * 30)
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
