"""Raw datasets -> training arrays in our on-disk format (see ``halp.data.storage``).

Each raw file is parsed and normalised on its own (per sample, vectorised) in a pool
of worker processes, and streamed in name order into every benchmark part it belongs
to, so peak memory does not grow with the number of samples. A per-file error stops
the run, naming the file and line, unless ``skip_bad`` is set: then the file is
skipped, logged, and listed in the manifest with a count in the summary.

NTU can be prepared with either of two recipes (``recipe``): the 2s-AGCN one of
ISC/CMD/HaLP (``halp.data.skeleton``, the default) or CrosSCLR/AimCLR's
(``halp.data.crossclr``); the manifest's ``normalisation`` entry names it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import time
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from halp import __version__
from halp.data import crossclr, ntu, nwucla, pku
from halp.data.layouts import KINECT20, NTU25, SkeletonLayout
from halp.data.skeleton import MAX_FRAMES, NUM_COORDS, NUM_JOINTS, NUM_PERSONS, process_sample
from halp.data.storage import PARTS, RECIPES, SplitWriter, load_array, manifest_recipe
from halp.errors import DataFormatError, HalpError, PrepareError, RawFormatError
from halp.io import MANIFEST, write_manifest

log = logging.getLogger(__name__)

NTU_HELP = (
    "NTU RGB+D cannot be downloaded automatically: register at the ROSE Lab site "
    "(rose1.ntu.edu.sg/dataset/actionRecognition), download nturgb_d_skeletons.zip "
    "(and nturgbd_skeletons_s018_to_s032.zip for NTU-120), and pass the zip files or the "
    "folders they extract to with --raw."
)


SKIP_HINT = "  (pass --skip-bad to skip bad files and list them in manifest.json)"


def _skip_or_refuse(name: str, error: str, skip_bad: bool, skipped: list[dict[str, str]]) -> None:
    """Refuse a bad input file (``PrepareError``), or with ``--skip-bad`` list and skip it."""
    if not skip_bad:
        raise PrepareError(error + SKIP_HINT) from None
    log.warning("skipping %s", error)
    skipped.append({"name": name, "error": error})


# --------------------------------------------------------------------------- sources

Source = tuple[str | None, str]  # (zip archive or None, path or member name)
_ZIPS: dict[str, zipfile.ZipFile] = {}

MAX_RAW_BYTES = 256 << 20
"""The largest raw file read (256 MiB): an NTU ``.skeleton`` file is under 2 MiB and a
whole PKU-MMD II video under 40 MiB; anything larger is refused before it is read."""

_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, RuntimeError)


def read_source(source: Source, limit: int = MAX_RAW_BYTES) -> bytes:
    """The bytes of a regular file on disk or of a member of a zip archive.

    Raises:
        RawFormatError: naming the file or ``archive!member``, for a file larger than
            ``limit`` (judged by its size on disk or the member's declared size, before
            reading), a corrupt, encrypted or unsupported archive member, or a member
            that decompresses to more than it declares.
    """
    archive, member = source
    origin = origin_of(source)
    if archive is None:
        path = Path(member)
        size = path.stat().st_size
        if size > limit:
            raise RawFormatError(
                origin, 0, f"{size} bytes, more than the {limit} a raw file may have"
            )
        return path.read_bytes()
    try:
        if archive not in _ZIPS:  # one open handle per process
            _ZIPS[archive] = zipfile.ZipFile(archive)
        zf = _ZIPS[archive]
        size = zf.getinfo(member).file_size
        if size > limit:
            raise RawFormatError(
                origin,
                0,
                f"decompresses to {size} bytes, more than the {limit} a raw file may have",
            )
        with zf.open(member) as fh:
            data = fh.read(limit + 1)
    except _ZIP_ERRORS as err:
        raise RawFormatError(origin, 0, f"unreadable archive member ({err})") from None
    if len(data) > limit:
        raise RawFormatError(origin, 0, f"decompresses to more than the {limit} bytes allowed")
    return data


def origin_of(source: Source) -> str:
    """How a source is named in messages: its path, or ``archive!member``."""
    archive, member = source
    return member if archive is None else f"{archive}!{member}"


def find_files(raw: Path, suffix: str) -> dict[str, Source]:
    """Map file stem -> source for every ``*suffix`` file under a folder or inside a zip."""
    raw = Path(raw)
    if not raw.exists():
        raise PrepareError(f"{raw}: no such file or folder. {NTU_HELP}")
    found: dict[str, Source] = {}

    def add(stem: str, source: Source) -> None:
        if stem in found:
            raise PrepareError(
                f"{raw}: the sample {stem} is there twice, as {origin_of(found[stem])} and "
                f"{origin_of(source)}; remove one of them"
            )
        found[stem] = source

    if raw.is_file():
        if not zipfile.is_zipfile(raw):
            raise PrepareError(f"{raw}: not a folder and not a zip archive")
        try:
            with zipfile.ZipFile(raw) as zf:
                members = zf.namelist()
        except _ZIP_ERRORS as err:
            raise PrepareError(f"{raw}: unreadable zip archive ({err})") from None
        for member in members:
            if member.endswith(suffix):
                add(Path(member).name[: -len(suffix)], (str(raw), member))
        return found

    def unreadable(err: OSError) -> None:
        log.warning("cannot read %s (%s): its files are not prepared", err.filename, err.strerror)

    for folder, dirs, files in sorted(os.walk(raw, onerror=unreadable)):
        for name in sorted(d for d in dirs if d.endswith(suffix)):
            log.warning(
                "%s is a folder, not a %s file: it is not read as a sample (only the files "
                "inside it are searched)",
                Path(folder) / name,
                suffix,
            )
        for name in sorted(files):
            if not name.endswith(suffix):
                continue
            path = Path(folder) / name
            if not path.is_file():  # a named pipe, a device, a dangling link: never opened
                log.warning("skipping %s: not a regular file", path)
                continue
            add(name[: -len(suffix)], (None, str(path)))
    return found


# --------------------------------------------------------------------------- output folders


def _fresh_folder(out: Path, benchmarks: Sequence[str]) -> Path:
    """An empty working folder next to ``out``; ``out`` must be empty or a prepared dataset.

    Preparation writes into it and :func:`_swap_in` replaces ``out`` with it at the end, so
    an interrupted run leaves the previous dataset untouched and never a mix of the two.
    """
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"--out {out}: exists and is not a folder")
        ours = {MANIFEST, *benchmarks}
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if foreign:
            raise PrepareError(
                f"--out {out}: holds other files ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); give an empty folder or one that "
                "halp prepare wrote (it is replaced as a whole)"
            )
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _swap_in(work: Path, out: Path) -> None:
    """Replace ``out`` by the completed ``work`` folder (two renames on one file system)."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- running


@dataclass
class Sample:
    """One prepared sample: its name, label, normalised array and true frame count."""

    name: str
    label: int
    frames: int
    data: np.ndarray


@dataclass
class Outcome:
    """What a worker made of one job: samples, or the error that stopped it."""

    key: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    empty: list[str] = field(default_factory=list)  # samples with no skeleton at all


def _ntu_job(job: tuple[str, Source, int, str, str]) -> Outcome:
    name, source, num_frames, compaction, recipe = job
    try:
        origin = origin_of(source)
        bodies = ntu.parse_skeleton(read_source(source), origin)
        if recipe == crossclr.RECIPE:  # every stored frame is valid (resized)
            data = crossclr.crossclr_sample(bodies, origin, num_frames)
            frames = num_frames
        else:
            data = process_sample(bodies, num_frames, rank_by_energy=True, compaction=compaction)
            frames = bodies.shape[1]
    except (RawFormatError, OSError) as err:
        return Outcome(name, error=str(err))
    label = ntu.parse_name(name).label
    # e.g. a body only after the last stored frame: kept, listed as empty in the manifest
    empty = [] if data.any() else [name]
    return Outcome(name, [Sample(name, label, frames, data)], empty=empty)


def _pku_job(job: tuple[str, Source, str, list[pku.Instance], int, str]) -> Outcome:
    video, source, label_origin, instances, num_frames, compaction = job
    try:
        bodies = pku.parse_skeleton(read_source(source), origin_of(source))
        out = Outcome(video)
        for inst in instances:
            clip = pku.cut(bodies, inst, label_origin)
            data = process_sample(clip, num_frames, rank_by_energy=False, compaction=compaction)
            out.samples.append(Sample(inst.name, inst.label, inst.frames, data))
            if not clip.any():
                out.empty.append(inst.name)
        return out
    except (RawFormatError, OSError) as err:
        return Outcome(video, error=str(err))


def _die_with_parent(parent: int) -> None:
    """Make this worker process end when its parent does, however the parent ends.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``); the
    worker loop also checks ``os.getppid()`` every :data:`_POLL` seconds, elsewhere too.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the symbols of this process, libc's too
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the getppid check remains
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


_POLL = 0.5  # seconds between liveness checks of the parent (workers) and workers (parent)
_PIPE_BYTES = 1 << 20  # a worker's outcome pipe: it need not wait while the parent writes


def _worker_loop(
    jobs: Connection, results: Connection, worker: Callable[[Any], Outcome], parent: int
) -> None:
    """A worker process: run the jobs received on ``jobs``, send outcomes on ``results``."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        while not jobs.poll(_POLL):
            if os.getppid() != parent:
                os._exit(1)
        try:
            job = jobs.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", worker(job))
        except Exception as err:  # an internal bug: re-raised in the parent
            reply = ("error", f"{type(err).__name__}: {err}")
        results.send(reply)


class _Pool:
    """Worker processes, one pipe each, watched so that none can hang the parent.

    The parent waits on the pipes and on the processes' sentinels together
    (:func:`multiprocessing.connection.wait`), so a worker killed while it holds a job is
    seen at once and named. Every worker ends with the parent (:func:`_die_with_parent`),
    and :meth:`close` kills any that is left.
    """

    def __init__(self, worker: Callable[[Any], Outcome], size: int) -> None:
        context = multiprocessing.get_context("fork")
        self.procs: list[BaseProcess] = []
        self.jobs: list[Connection] = []  # the parent's ends: jobs out, outcomes in
        self.conns: list[Connection] = []
        for _ in range(size):
            job_in, job_out = context.Pipe(duplex=False)
            result_in, result_out = context.Pipe(duplex=False)
            with contextlib.suppress(OSError, AttributeError):  # Linux: room for 5 outcomes
                fcntl.fcntl(result_out.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            proc = context.Process(
                target=_worker_loop,
                args=(job_in, result_out, worker, os.getpid()),
                daemon=True,
            )
            proc.start()
            job_in.close()
            result_out.close()
            self.procs.append(proc)
            self.jobs.append(job_out)
            self.conns.append(result_in)

    def close(self) -> None:
        """Stop the workers (killed if they do not stop within a second)."""
        for conn in self.jobs:
            with contextlib.suppress(OSError):
                conn.send(None)
        deadline = time.monotonic() + 1.0
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in (*self.jobs, *self.conns):
            conn.close()


def _outcomes(
    worker: Callable[[Any], Outcome], jobs: Sequence[Any], workers: int, desc: str
) -> Iterator[Outcome]:
    """Run jobs and yield their outcomes in job order, in worker processes if ``workers > 1``.

    At most ``4 * workers`` outcomes wait to be yielded, so memory stays flat. A worker
    process that dies (killed by the system, e.g. out of memory) fails the run with a
    :class:`PrepareError` naming the file it held, never a hang (:class:`_Pool`).
    """
    bar = tqdm(total=len(jobs), desc=desc, unit="file", disable=None, leave=False)
    try:
        if workers <= 1:
            for job in jobs:
                yield worker(job)
                bar.update()
            return
        pool = _Pool(worker, workers)
        try:
            yield from _pooled(pool, jobs, workers, bar)
        finally:
            pool.close()
    finally:
        bar.close()


def _pooled(pool: _Pool, jobs: Sequence[Any], workers: int, bar: tqdm) -> Iterator[Outcome]:
    """The outcomes of ``jobs`` in order, from ``pool``'s workers.

    Each worker holds up to two jobs (one running, one waiting in its pipe), so it never
    idles while the parent writes; its outcomes come back in the order it got the jobs.
    """
    holding: list[deque[int]] = [deque() for _ in range(workers)]  # job indices per worker
    done: dict[int, Outcome] = {}
    next_job, next_out = 0, 0
    while next_out < len(jobs):
        for w in range(workers):  # top the workers up, within the window
            while len(holding[w]) < 2 and next_job < min(len(jobs), next_out + 4 * workers):
                holding[w].append(next_job)
                next_job += 1
                with contextlib.suppress(OSError):  # a dead worker: seen by its sentinel
                    pool.jobs[w].send(jobs[holding[w][-1]])
        ready = set(wait([*pool.conns, *(p.sentinel for p in pool.procs)], timeout=_POLL))
        for w, (conn, proc) in enumerate(zip(pool.conns, pool.procs, strict=True)):
            if conn in ready:
                try:
                    status, value = conn.recv()
                except (EOFError, OSError):  # the pipe closed: the worker is gone
                    status, value = "died", None
                if status == "ok":
                    done[holding[w].popleft()] = value
                    continue
                if status == "error":
                    raise RuntimeError(f"a worker failed on {jobs[holding[w][0]][0]}: {value}")
            elif proc.sentinel not in ready:
                continue
            held = holding[w]
            where = f"while preparing {jobs[held[0]][0]}" if held else "between files"
            proc.join(1.0)
            raise PrepareError(
                f"a worker process died (exit code {proc.exitcode}; killed by the system, e.g. "
                f"out of memory) {where}; nothing was written. Retry with fewer --workers or "
                "more memory."
            )
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
            bar.update()


@dataclass
class Summary:
    """What a preparation did; also written as the manifest."""

    dataset: str
    out: Path
    counts: dict[str, dict[str, int]]
    skipped: list[dict[str, str]]
    empty: list[str]
    extra: dict[str, Any]

    def lines(self) -> Iterable[str]:
        """The summary printed by ``halp prepare``, one line per item."""
        for bench, parts in self.counts.items():
            yield f"{self.dataset} {bench}: " + ", ".join(f"{p} {n}" for p, n in parts.items())
        yield f"skipped {len(self.skipped)} bad file(s)" + (
            " (listed in manifest.json)" if self.skipped else ""
        )
        if self.empty:
            yield f"{len(self.empty)} sample(s) hold no skeleton (kept; listed in manifest.json)"


def _stream(
    out: Path,
    dataset: str,
    num_classes: int,
    benchmarks: Sequence[str],
    capacity: dict[str, dict[str, int]],
    route: Callable[[str], dict[str, str]],
    worker: Callable[[Any], Outcome],
    jobs: Sequence[Any],
    workers: int,
    skip_bad: bool,
    num_frames: int,
    extra: dict[str, Any],
    skipped: list[dict[str, str]],
    layout: SkeletonLayout = NTU25,
) -> Summary:
    """Run the jobs and stream every sample into the parts ``route`` assigns it to.

    ``skipped`` holds files already skipped before the run (bad names, bad labels).
    ``route`` leaves out the benchmarks a sample is not part of.
    """
    out = Path(out)
    work = _fresh_folder(out, benchmarks)  # the old folder stays valid until the swap
    run_id = uuid.uuid4().hex
    shape = (NUM_COORDS, num_frames, layout.num_joints, layout.persons)
    writers = {
        (b, p): SplitWriter(
            work / b, p, capacity[b][p], shape, dataset, b, num_classes, run_id, layout.name
        )
        for b in benchmarks
        for p in PARTS
    }
    empty: list[str] = []
    try:
        for outcome in _outcomes(worker, jobs, workers, f"prepare {dataset}"):
            if outcome.error is not None:
                _skip_or_refuse(outcome.key, outcome.error, skip_bad, skipped)
                continue
            empty.extend(outcome.empty)
            for sample in outcome.samples:
                for bench, part in route(sample.name).items():
                    writers[bench, part].append(
                        sample.data, sample.name, sample.label, sample.frames
                    )
        counts: dict[str, dict[str, int]] = {b: {} for b in benchmarks}
        for (bench, part), writer in writers.items():
            counts[bench][part] = len(writer.close().names)
    except BaseException:
        for writer in writers.values():
            if writer.tmp_path.exists():
                writer.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    for bench, parts in counts.items():
        if parts.get("train", 0) == 0:
            extra[f"warning_empty_{bench}"] = (
                f"{bench} has no training sample: pretraining and evaluation on it will be "
                "refused (check --raw and the split files)"
            )
            log.warning(extra[f"warning_empty_{bench}"])
    summary = Summary(dataset, out, counts, skipped, empty, extra)
    manifest = {
        "format": "halp-skeleton/1",
        "dataset": dataset,
        "num_classes": num_classes,
        "num_frames": num_frames,
        "benchmarks": counts,
        "skipped": skipped,
        "empty_samples": empty,
        "halp_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_ids": {b: run_id for b in benchmarks},
        **({"layout": layout.name} if layout != NTU25 else {}),
        **extra,
    }
    write_manifest(work, manifest)
    _swap_in(work, out)
    return summary


# ----------------------------------------------------------------------------- NTU


def prepare_ntu(
    dataset: str,
    raws: Sequence[Path],
    out: Path,
    workers: int = 1,
    skip_bad: bool = False,
    compaction: str = "all",
    num_frames: int | None = None,
    expect_complete: bool = False,
    recipe: str = "2s-agcn",
) -> Summary:
    """Prepare every benchmark of NTU-60 or NTU-120 from raw folders or zip archives.

    Args:
        dataset: ``ntu60`` or ``ntu120``.
        raws: Folders or zip archives of ``.skeleton`` files.
        out: The output folder (replaced as a whole when complete).
        workers: Worker processes.
        skip_bad: Skip malformed files (listed in the manifest) instead of stopping.
        compaction: The 2s-AGCN recipe's frame compaction (``all`` or ``leading``).
        num_frames: Stored frames: by default 300 (2s-AGCN: padded or truncated) or 50
            (crossclr: every sample resized to it).
        expect_complete: Fail unless every file of the dataset is present.
        recipe: ``2s-agcn`` (:func:`halp.data.skeleton.process_sample`) or ``crossclr``
            (:func:`halp.data.crossclr.crossclr_sample`).
    """
    spec = ntu.DATASETS[dataset]
    if recipe not in RECIPES:
        raise PrepareError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe == crossclr.RECIPE and compaction != "all":
        raise PrepareError(
            "--compaction belongs to the 2s-AGCN recipe; the crossclr recipe resizes the "
            "first frames of a sequence and has no compaction"
        )
    if num_frames is None:
        num_frames = crossclr.OUT_FRAMES if recipe == crossclr.RECIPE else MAX_FRAMES
    if num_frames < 1:
        raise PrepareError(f"num_frames must be at least 1, got {num_frames}")
    if not raws:
        raise PrepareError(f"no --raw given. {NTU_HELP}")
    sources: dict[str, Source] = {}
    for raw in raws:
        found = find_files(Path(raw), ".skeleton")
        if not found:
            raise PrepareError(f"{raw}: holds no .skeleton file. {NTU_HELP}")
        clash = sorted(set(found) & set(sources))
        if clash:
            raise PrepareError(
                f"{raw}: {len(clash)} sample(s) also found in another --raw, "
                f"e.g. {clash[0]}: give each archive once"
            )
        sources.update(found)
    bad: list[dict[str, str]] = []
    names: list[str] = []
    outside = 0
    for name in sorted(sources):
        try:
            parsed = ntu.parse_name(name)
            if parsed.setup > spec.max_setup:
                outside += 1  # e.g. NTU-120's second archive given to ntu60
                continue
            ntu.check_in_dataset(parsed, name, spec)
        except ValueError as err:
            _skip_or_refuse(name, f"{origin_of(sources[name])}: {err}", skip_bad, bad)
            continue
        names.append(name)
    if (
        dataset == "ntu120"
        and names
        and max(ntu.parse_name(n).setup for n in names) <= ntu.NTU60.max_setup
    ):
        extra_warning = (
            f"no file of setups S018-S032 among {len(names)}: NTU-120 ships as two "
            "archives; pass the second one with another --raw"
        )
        log.warning(extra_warning)
    else:
        extra_warning = ""
    missing = ntu.missing_samples(dataset)
    kept = [n for n in names if n not in missing]
    membership = {b: ntu.split_names(kept, dataset, b) for b in spec.benchmarks}
    capacity = {b: {"train": len(tr), "test": len(te)} for b, (tr, te) in membership.items()}
    train_sets = {b: set(tr) for b, (tr, _) in membership.items()}

    def route(name: str) -> dict[str, str]:
        return {b: "train" if name in train_sets[b] else "test" for b in spec.benchmarks}

    normalisation: dict[str, Any] = (
        {"recipe": crossclr.RECIPE, "frames": num_frames}
        if recipe == crossclr.RECIPE
        else {"recipe": "2s-AGCN", "compaction": compaction}
    )
    extra: dict[str, Any] = {
        "sources": [str(r) for r in raws],
        "files_found": len(names),
        "files_expected": spec.num_files,
        "excluded_missing_skeletons": len(names) - len(kept),
        "ignored_outside_dataset": outside,
        "normalisation": normalisation,
        "official_split_sizes": {b: list(v) for b, v in spec.split_sizes.items()},
    }
    if extra_warning:
        extra["warning_second_archive"] = extra_warning
    if len(names) != spec.num_files:
        message = (
            f"found {len(names)} of the {spec.num_files} {dataset} files: split sizes "
            "will differ from the paper's"
        )
        if expect_complete:
            raise PrepareError(message + f". {NTU_HELP}")
        extra["warning_incomplete"] = message
        log.warning(message)
    jobs = [(n, sources[n], num_frames, compaction, recipe) for n in kept]
    summary = _stream(
        out, dataset, spec.num_classes, spec.benchmarks, capacity, route,
        worker=_ntu_job, jobs=jobs, workers=workers, skip_bad=skip_bad,
        num_frames=num_frames, extra=extra, skipped=bad,
    )  # fmt: skip
    if len(names) == spec.num_files and not summary.skipped:
        for bench, (n_train, n_test) in spec.split_sizes.items():
            got = summary.counts[bench]
            if (got["train"], got["test"]) != (n_train, n_test):
                raise PrepareError(
                    f"{dataset} {bench}: wrote {got} but the official sizes are "
                    f"{n_train}/{n_test}; please report this"
                )
    return summary


# ----------------------------------------------------------------------------- PKU


def prepare_pku(
    raw: Path,
    out: Path,
    workers: int = 1,
    skip_bad: bool = False,
    compaction: str = "all",
    num_frames: int = MAX_FRAMES,
) -> Summary:
    """Prepare PKU-MMD phase II (xsub and xview) from its raw folder."""
    raw = Path(raw)
    skeleton_dir, label_dir = raw / "skeleton", raw / "label"
    for folder in (skeleton_dir, label_dir):
        if not folder.is_dir():
            raise PrepareError(
                f"{folder}: folder not found. PKU-MMD phase II must be requested from its site "
                "(struct002.github.io/PKUMMD); extract Skeleton_v2 into skeleton/, "
                "Label_PKUMMD_v2 into label/ and put Split/cross_*_v2.txt beside them."
            )
    skeletons = find_files(skeleton_dir, ".txt")
    if not skeletons:
        raise PrepareError(f"{skeleton_dir}: holds no skeleton .txt file")
    videos = set(skeletons)
    train_sets = {b: pku.read_split(raw / f, videos) for b, f in pku.BENCHMARKS.items()}
    jobs = []
    bad: list[dict[str, str]] = []
    instances_of: dict[str, list[pku.Instance]] = {}
    for video in sorted(videos):
        label_path = label_dir / f"{video}.txt"
        try:
            if not label_path.is_file():
                raise RawFormatError(str(label_path), 0, f"no label file for skeleton {video}")
            instances_of[video] = pku.parse_labels(
                label_path.read_text(encoding="utf-8", errors="replace"), str(label_path), video
            )
        except RawFormatError as err:
            _skip_or_refuse(video, str(err), skip_bad, bad)
            continue
        jobs.append(
            (video, skeletons[video], str(label_path), instances_of[video], num_frames, compaction)
        )
    capacity = {
        b: {
            "train": sum(len(v) for k, v in instances_of.items() if k in train_sets[b]),
            "test": sum(len(v) for k, v in instances_of.items() if k not in train_sets[b]),
        }
        for b in pku.BENCHMARKS
    }

    def route(name: str) -> dict[str, str]:
        video = name.rsplit("_", 1)[0]
        return {b: "train" if video in train_sets[b] else "test" for b in pku.BENCHMARKS}

    extra = {
        "sources": [str(raw)],
        "videos": len(videos),
        "normalisation": {"recipe": "2s-AGCN", "compaction": compaction},
    }
    summary = _stream(
        out, "pku2", pku.NUM_CLASSES, tuple(pku.BENCHMARKS), capacity, route,
        worker=_pku_job, jobs=jobs, workers=workers, skip_bad=skip_bad,
        num_frames=num_frames, extra=extra, skipped=bad,
    )  # fmt: skip
    return summary


# ----------------------------------------------------------------------------- NW-UCLA


def _nwucla_job(job: tuple[str, Source, int]) -> Outcome:
    name, source, num_frames = job
    try:
        joints = nwucla.parse_clip(read_source(source), origin_of(source), name)
    except (RawFormatError, OSError) as err:
        return Outcome(name, error=str(err))
    data = nwucla.to_sample(nwucla.normalize_clip(joints), num_frames)
    label = nwucla.parse_name(name).label
    return Outcome(name, [Sample(name, label, joints.shape[0], data)])


NWUCLA_HELP = (
    "NW-UCLA's skeletons are the all_sqe release: a folder (or zip) of 1,484 files "
    "aXX_sYY_eZZ_vWW.json; pass it with --raw"
)


def prepare_nwucla(
    raw: Path,
    out: Path,
    workers: int = 1,
    skip_bad: bool = False,
    num_frames: int = nwucla.MAX_FRAMES,
    drop_single_frame: bool = False,
    val_subjects: Sequence[int] = nwucla.VAL_SUBJECTS,
    expect_complete: bool = False,
) -> Summary:
    """Prepare NW-UCLA's three leave-one-view-out benchmarks and their validation twins.

    Args:
        raw: A folder or zip archive of the ``all_sqe`` JSON files.
        out: The output folder (replaced as a whole when complete).
        workers: Worker processes.
        skip_bad: Skip malformed files (listed in the manifest) instead of stopping.
        num_frames: Stored frames per clip (longer clips are cut; the default keeps all).
        drop_single_frame: Leave out the clips of a single frame (Predict & Cluster's
            1,019 / 463 protocol); by default they are kept (1,020 / 464).
        val_subjects: The subjects of the ``xviewK-val`` benchmarks' test parts.
        expect_complete: Fail unless the files are exactly the known release.

    The recipe, the splits and the checks are those of :mod:`halp.data.nwucla`.
    """
    if num_frames < 1:
        raise PrepareError(f"num_frames must be at least 1, got {num_frames}")
    val = tuple(sorted(set(int(s) for s in val_subjects)))
    if not val or not set(val) <= set(nwucla.SUBJECTS) or len(val) == len(nwucla.SUBJECTS):
        raise PrepareError(
            f"--val-subjects {list(val_subjects)}: give some but not all of the subjects 1-10"
        )
    if not Path(raw).exists():
        raise PrepareError(f"{raw}: no such file or folder. {NWUCLA_HELP}")
    sources = find_files(Path(raw), ".json")
    if not sources:
        raise PrepareError(f"{raw}: holds no .json file. {NWUCLA_HELP}")
    bad: list[dict[str, str]] = []
    clips: dict[str, nwucla.ClipName] = {}
    for name in sorted(sources):
        try:
            clips[name] = nwucla.parse_name(name)
        except ValueError as err:
            _skip_or_refuse(name, f"{origin_of(sources[name])}: {err}", skip_bad, bad)
    digest = nwucla.release_digest(read_source(sources[n]) for n in sorted(sources))
    verified = digest == nwucla.RELEASE_SHA256
    if not verified:
        message = (
            f"{raw}: {len(sources)} file(s) whose content is not the all_sqe release "
            f"(sha256 {digest[:12]}..., expected {nwucla.RELEASE_SHA256[:12]}...): split sizes "
            "and results will differ from the published ones"
        )
        if expect_complete:
            raise PrepareError(message)
        log.warning(message)
    # single-frame clips: the one place their frame count is needed before the run
    single: list[str] = []
    if drop_single_frame:
        for name in list(clips):
            source = sources[name]
            try:
                length = len(nwucla.parse_clip(read_source(source), origin_of(source), name))
            except RawFormatError:
                continue  # reported (or skipped) by its job
            if length == 1:
                single.append(name)
                del clips[name]
    benches = nwucla.benchmarks()
    routes = {
        name: {b: p for b in benches if (p := nwucla.part_of(clip, b, val)) is not None}
        for name, clip in clips.items()
    }
    capacity = {
        b: {p: sum(1 for r in routes.values() if r.get(b) == p) for p in PARTS} for b in benches
    }
    extra: dict[str, Any] = {
        "sources": [str(raw)],
        "files_found": len(sources),
        "files_expected": nwucla.NUM_FILES,
        "release_sha256": digest,
        "release_verified": verified,
        "normalisation": {
            "recipe": "nwucla",
            "centre": "spine of the first frame",
            "align": "first frame upright (+y), shoulders onto +x",
            "frames": num_frames,
        },
        "single_frame_clips": "dropped" if drop_single_frame else "kept",
        "dropped_single_frame": single,
        "val_subjects": list(val),
        "official_split_sizes": {b: list(v) for b, v in nwucla.SPLIT_SIZES.items()},
    }
    if not verified:
        extra["warning_release"] = message
    jobs = [(n, sources[n], num_frames) for n in clips]
    summary = _stream(
        out, "nwucla", nwucla.NUM_CLASSES, benches, capacity, routes.__getitem__,
        worker=_nwucla_job, jobs=jobs, workers=workers, skip_bad=skip_bad,
        num_frames=num_frames, extra=extra, skipped=bad, layout=KINECT20,
    )  # fmt: skip
    if verified and not summary.skipped:
        for bench, sizes in nwucla.SPLIT_SIZES.items():
            dropped = [nwucla.part_of(nwucla.parse_name(n), bench, val) for n in single]
            want = {p: n - dropped.count(p) for p, n in zip(PARTS, sizes, strict=True)}
            if summary.counts[bench] != want:
                raise PrepareError(
                    f"nwucla {bench}: wrote {summary.counts[bench]} but the release gives "
                    f"{want}; please report this"
                )
    return summary


def default_workers() -> int:
    """The number of cores this process may use (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


# ------------------------------------------------------------------ CMD/ISC import

NUM_CLASSES = {"ntu60": 60, "ntu120": 120, "pku2": pku.NUM_CLASSES}
_CMD_BENCHMARKS = {"xsetup": "xset", "xsub": "xsub", "xview": "xview", "xset": "xset"}
_CMD_PARTS = (("train", "train"), ("val", "test"))


class _ListUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy scalars only; anything else is refused."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a label pickle")


def _read_label_pickle(path: Path) -> tuple[list[str], list[int]]:
    try:
        with open(path, "rb") as fh:
            obj = _ListUnpickler(fh).load()
    except FileNotFoundError:
        raise PrepareError(f"{path}: not found (expected the CMD/ISC layout)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise PrepareError(f"{path}: not a (names, labels) label pickle: {err}") from None
    pair = isinstance(obj, (tuple, list)) and len(obj) == 2
    names, labels = obj if pair else (None, None)
    if not (
        isinstance(names, (list, tuple))
        and isinstance(labels, (list, tuple))
        and len(names) == len(labels)
        and all(isinstance(n, str) for n in names)
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels)
    ):
        raise PrepareError(
            f"{path}: expected a pickled (names, labels) pair: a list of sample names and a "
            "list of integer labels of equal lengths"
        )
    try:
        return [ntu.sample_name(n) for n in names], [int(v) for v in labels]
    except HalpError as err:
        raise PrepareError(f"{path}: {err}") from None


MAX_TRUE_FRAMES = 100_000
"""The largest true frame count import-cmd accepts (about an hour at 30 fps; NTU clips have
at most 300 frames, PKU-MMD instances a few thousand)."""


def _read_frame_counts(path: Path) -> np.ndarray:
    """A ``*_num_frame.npy``: integer frame counts in 1..MAX_TRUE_FRAMES, one per sample."""
    try:
        counts = load_array(path, mmap=False).reshape(-1)
    except DataFormatError as err:
        raise PrepareError(str(err)) from None
    if (
        counts.dtype.kind == "f"
        and np.all(np.isfinite(counts))
        and np.all(counts == counts.round())
    ):
        counts = counts.astype(np.int64)
    if counts.dtype.kind not in "iu":
        raise PrepareError(f"{path}: frame counts must be integers, found {counts.dtype}")
    bad = np.flatnonzero((counts < 1) | (counts > MAX_TRUE_FRAMES))
    if bad.size:
        raise PrepareError(
            f"{path}: sample {int(bad[0])} has frame count {int(counts[bad[0]])}; a frame count "
            f"must be in 1..{MAX_TRUE_FRAMES} ({bad.size} sample(s) out of range)"
        )
    return counts.astype(np.int64)


def import_cmd(
    src: Path, out: Path, dataset: str, benchmark: str | None = None, chunk: int = 512
) -> Summary:
    """Convert one benchmark folder in the CMD/ISC layout into our format.

    The folder holds ``{train,val}_data_joint.npy`` (N, 3, T, 25, 2),
    ``{train,val}_label.pkl`` (a pickled (names, labels) pair) and
    ``{train,val}_num_frame.npy``. ``val`` becomes our ``test`` part. The pickles are
    loaded with an unpickler that accepts only lists, strings and numbers, but they
    should still come from a source you trust.
    """
    src = Path(src)
    if dataset not in NUM_CLASSES:
        raise PrepareError(f"--dataset must be one of {sorted(NUM_CLASSES)}, got {dataset!r}")
    if not src.is_dir():
        raise PrepareError(f"{src}: no such folder")
    bench = benchmark or _CMD_BENCHMARKS.get(src.name)
    if bench is None:
        raise PrepareError(
            f"{src}: cannot tell the benchmark from the folder name; pass --benchmark"
        )
    num_classes = NUM_CLASSES[dataset]
    log.warning(
        "import-cmd loads %s/*_label.pkl with pickle (restricted to lists and numbers); "
        "only import files from a source you trust",
        src,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = _fresh_folder(out / bench, ())  # one benchmark, replaced as a whole at the end
    run_id = uuid.uuid4().hex
    counts: dict[str, int] = {}
    for src_part, part in _CMD_PARTS:
        data_path = src / f"{src_part}_data_joint.npy"
        if not data_path.is_file():
            raise PrepareError(f"{data_path}: not found (expected the CMD/ISC layout)")
        try:
            data = load_array(data_path)
        except DataFormatError as err:
            raise PrepareError(str(err)) from None
        label_path = src / f"{src_part}_label.pkl"
        names, labels = _read_label_pickle(label_path)
        frame_path = src / f"{src_part}_num_frame.npy"
        frames = _read_frame_counts(frame_path)
        if data.ndim != 5 or data.shape[1] != 3 or data.shape[3:] != (NUM_JOINTS, NUM_PERSONS):
            raise PrepareError(f"{data_path}: shape {data.shape}, expected (N, 3, T, 25, 2)")
        if data.dtype.kind not in "fiu":
            raise PrepareError(f"{data_path}: values of type {data.dtype}, expected numbers")
        if not len(data) == len(names) == len(frames):
            raise PrepareError(
                f"{src}: {src_part} has {len(data)} arrays ({data_path.name}), {len(names)} "
                f"labels ({label_path.name}) and {len(frames)} frame counts ({frame_path.name}); "
                "they must agree"
            )
        bad = [lab for lab in labels if not 0 <= lab < num_classes]
        if bad:
            raise PrepareError(
                f"{src / f'{src_part}_label.pkl'}: label {bad[0]} outside "
                f"0..{num_classes - 1} for {dataset}; is --dataset right?"
            )
        writer = SplitWriter(
            work, part, len(data), data.shape[1:], dataset, bench, num_classes, run_id
        )
        try:
            for lo in range(0, len(data), chunk):
                block = np.asarray(data[lo : lo + chunk], dtype=np.float32)
                for j, sample in enumerate(block):
                    i = lo + j
                    try:
                        writer.append(sample, names[i], labels[i], int(frames[i]))
                    except DataFormatError as err:
                        raise PrepareError(f"{data_path}: sample {i}: {err}") from None
            counts[part] = len(writer.close().names)
        except BaseException:
            writer.abort()
            shutil.rmtree(work, ignore_errors=True)
            raise
    extra = {"sources": [str(src)], "imported_from": "CMD/ISC layout"}
    # other benchmarks imported into the same folder before stay listed
    previous = _read_manifest(out / MANIFEST)
    if previous.get("dataset") not in (None, dataset):
        previous = {}
    elif manifest_recipe(previous) not in (None, "2s-agcn"):
        # CMD's arrays are 2s-AGCN ones: benchmarks of another recipe are no longer
        # listed, so loading them is refused (check_run) rather than mixed
        log.warning(
            "%s: its other benchmarks were prepared with the %s recipe; they are dropped "
            "from the manifest (prepare them again)",
            out,
            manifest_recipe(previous),
        )
        previous = {}
    manifest = {
        "format": "halp-skeleton/1",
        "dataset": dataset,
        "num_classes": num_classes,
        "num_frames": int(data.shape[2]),
        "benchmarks": {**previous.get("benchmarks", {}), bench: counts},
        "skipped": [],
        "empty_samples": [],
        "halp_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_ids": {**previous.get("run_ids", {}), bench: run_id},
        **extra,
    }
    _swap_in(work, out / bench)  # until the manifest names its run id, readers refuse it
    write_manifest(out, manifest)
    return Summary(dataset, out, {bench: counts}, [], [], extra)


def _read_manifest(path: Path) -> dict[str, Any]:
    """A manifest's content, or an empty mapping when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
