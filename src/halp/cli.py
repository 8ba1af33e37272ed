"""The ``halp`` command line: one verb per workflow step, each runnable by hand.

Errors meant for users (:class:`halp.errors.HalpError`) and operating-system errors (a
missing file, a full disk) are printed as one line, ``halp VERB: error: ...``, with exit
status 2. Anything else is an internal bug and keeps its traceback; ``--debug`` shows
the traceback of every error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from halp import __version__

log = logging.getLogger("halp")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser("prepare", help="turn raw datasets into training arrays")
    kinds = prep.add_subparsers(dest="kind", required=True, metavar="DATASET")

    def out_and_workers(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="output folder")
        p.add_argument(
            "--workers", type=int, default=None, help="worker processes (default: all cores)"
        )
        p.add_argument(
            "--skip-bad",
            action="store_true",
            help="skip malformed files, list them in manifest.json and the summary",
        )

    def common(p: argparse.ArgumentParser) -> None:
        out_and_workers(p)
        p.add_argument(
            "--recipe",
            choices=("2s-agcn", "crossclr"),
            default="2s-agcn",
            help="'2s-agcn' (default): the normalisation of ISC/CMD/HaLP, 300 frames; "
            "'crossclr' (NTU only): CrosSCLR/AimCLR/HiCLR's, the first two bodies centred "
            "on joint 21, resized to 50 frames, shoulders turned onto x (a config's "
            "data.recipe must name the recipe of its data)",
        )
        p.add_argument(
            "--compaction",
            choices=("all", "leading"),
            default=None,
            help="2s-AGCN recipe: 'all' (default) moves every valid frame to the front; "
            "'leading' is the 2s-AGCN code (only when frame 0 is empty)",
        )

    for name, text in (
        ("ntu60", "NTU RGB+D 60 (xsub, xview)"),
        ("ntu120", "NTU RGB+D 120 (xsub, xset)"),
    ):
        p = kinds.add_parser(name, help=text)
        p.add_argument(
            "--raw",
            type=Path,
            action="append",
            required=True,
            help="folder or zip of .skeleton files; repeat for the second NTU-120 "
            "archive (S018-S032)",
        )
        p.add_argument(
            "--expect-complete",
            action="store_true",
            help="fail unless every file of the dataset is present",
        )
        common(p)
    p = kinds.add_parser("pku2", help="PKU-MMD phase II (xsub, xview)")
    p.add_argument(
        "--raw",
        type=Path,
        required=True,
        help="folder holding skeleton/, label/ and cross_*_v2.txt",
    )
    common(p)
    p = kinds.add_parser(
        "nwucla", help="NW-UCLA, the all_sqe JSON release (xview1-3 and xview1-3-val)"
    )
    p.add_argument("--raw", type=Path, required=True, help="folder or zip of the all_sqe files")
    out_and_workers(p)
    p.add_argument(
        "--frames", type=int, default=201, help="stored frames per clip (default 201: all)"
    )
    p.add_argument(
        "--drop-single-frame",
        action="store_true",
        help="leave out the two 1-frame clips (Predict & Cluster's 1,019 / 463 protocol)",
    )
    p.add_argument(
        "--val-subjects",
        default="9,10",
        help="subjects (1-10, comma-separated) of the xviewK-val benchmarks' test parts",
    )
    p.add_argument(
        "--expect-complete",
        action="store_true",
        help="fail unless the files are exactly the all_sqe release (checksum)",
    )
    p = kinds.add_parser("import-cmd", help="convert a CMD/ISC-layout benchmark folder")
    p.add_argument("src", type=Path, help="folder with {train,val}_data_joint.npy etc.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--dataset", required=True, choices=("ntu60", "ntu120", "pku2"))
    p.add_argument("--benchmark", default=None, help="default: from the folder name")
    p = kinds.add_parser("tu", help="a TU graph dataset (MUTAG, NCI1, PROTEINS, DD, ...)")
    p.add_argument("name", help="the TU dataset name, e.g. MUTAG")
    p.add_argument("--out", type=Path, required=True, help="root folder (writes NAME/raw/)")
    p.add_argument(
        "--source", type=Path, default=None, help="a local NAME.zip or NAME_*.txt folder"
    )
    p.add_argument(
        "--url", default=None, help="download address, {name} = NAME (default: TU collection)"
    )


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic dataset in the real raw formats")
    p.add_argument("kind", choices=("ntu", "pku", "nwucla", "tu"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="SYNTHETIC", help="tu: the dataset name")
    p.add_argument("--graphs", type=int, default=188, help="tu: number of graphs")


def _add_graphcl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graphcl", help="GraphCL / GraphCL+HaLP on a TU dataset, one seed")
    _add_config_options(p, "method=graphcl_halp")
    p.add_argument("--out", type=Path, default=None, help="the per-seed results JSON to write")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    p.epilog = _config_keys_help("GraphCLConfig")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("graphcl-summary", help="summarise per-seed graph results (mean ± std)")
    p.add_argument("seeds", type=Path, nargs="+", help="per-seed JSONs of `halp graphcl`")
    p.add_argument("--out", type=Path, required=True, help="e.g. results/tu_mutag_graphcl_svm.json")


def _add_smoke(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smoke", help="the embedded default: synthetic raw data end to end")
    p.add_argument("--out", type=Path, default=Path("runs/smoke"))
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _add_config_options(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--config",
        default=None,
        help="YAML file of config keys, or builtin:NAME for one shipped with the package "
        "(builtin:smoke: the tiny CPU configuration)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, e.g. --set {example} (repeatable)",
    )


def _config_keys_help(name: str) -> str:
    """The config keys of ``halp.config.<name>`` with their defaults, for ``--help``."""
    import dataclasses

    from halp import config as config_module

    def walk(cls: type, prefix: str) -> list[str]:
        lines = []
        for f in dataclasses.fields(cls):
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            if dataclasses.is_dataclass(default):
                lines += walk(type(default), f"{prefix}{f.name}.")
            else:
                lines.append(f"  {prefix}{f.name} = {default!r}")
        return lines

    keys = "\n".join(walk(getattr(config_module, name), ""))
    return f"config keys (--set KEY=VALUE; defaults shown):\n{keys}"


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining (baseline, halp, cmd, ...)")
    _add_config_options(p, "halp.lam=0.6")
    p.epilog = _config_keys_help("PretrainConfig")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--run", type=Path, required=True, help="run folder (checkpoints, metrics)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run")
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the run in --run if it has a checkpoint, else start it (for workflows)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="linear, kNN, semi-supervised, fine-tuning, transfer; ensemble"
    )
    verbs = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    keys = _config_keys_help("EvalConfig")
    for name, text in (
        ("linear", "linear probe on the frozen encoder"),
        ("knn", "k-nearest-neighbour classification of the frozen features"),
        ("semi", "fine-tuning on a fraction of the labels"),
        ("finetune", "fine-tuning the whole network"),
        ("transfer", "fine-tuning on another dataset than the pretraining one"),
    ):
        q = verbs.add_parser(name, help=text)
        q.add_argument("--checkpoint", required=True, help="a halp pretrain checkpoint")
        q.add_argument("--data", required=True, help="the benchmark folder to evaluate on")
        q.add_argument("--out", type=Path, required=False, help="the results JSON to write")
        _add_config_options(q, "label_fraction=0.1")
        q.add_argument(
            "--print-config", action="store_true", help="print the resolved configuration and exit"
        )
        q.epilog = keys
        q.formatter_class = argparse.RawDescriptionHelpFormatter
    q = verbs.add_parser(
        "ensemble",
        help="late fusion of evaluated classifiers' test scores (e.g. joint+motion+bone: 3s)",
        description="Fuse the saved test scores (X.scores.npz next to each results JSON X.json) "
        "of two or more evaluations of one method on one test set: fused = sum of "
        "weight * scores; top-1 of its argmax. Weights are fixed inputs, never chosen on "
        "the test set.",
    )
    q.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="NAME=RESULTS.json",
        help="a member, e.g. joint=results/ntu60_xsub_hiclr_linear.json (2 or more)",
    )
    q.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="a member's weight, 0 or more (default 1 each)",
    )
    q.add_argument(
        "--out", type=Path, required=True, help="e.g. results/ntu60_xsub_hiclr-3s_linear.json"
    )
    p.epilog = keys
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="download a file and check its sha256")
    p.add_argument("url")
    p.add_argument("--sha256", required=True, help="the expected digest (64 hex digits)")
    p.add_argument("--out", type=Path, required=True)


def _add_tables(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tables", help="the paper's tables: reproduced vs published (md, tex, csv)")
    p.add_argument("--results", type=Path, default=Path("results"), help="folder of results JSONs")
    p.add_argument("--out", type=Path, default=Path("results/tables"), help="output folder")


def _add_figures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="training curves and semi-supervised plots (PNG, PDF)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders")
    p.add_argument("--results", type=Path, default=Path("results"), help="folder of results JSONs")
    p.add_argument("--out", type=Path, default=Path("results/figures"), help="output folder")


def _add_release(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "release", help="a finished run as a checkable artefact: encoder, card, SHA256SUMS"
    )
    p.add_argument("run", type=Path, help="a run folder of halp pretrain (with final.pt)")
    p.add_argument("--out", type=Path, required=True, help="the release folder to write (new)")
    p.add_argument(
        "--result",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="a results JSON of halp evaluate on RUN/final.pt (repeatable; default: every "
        "such JSON under --results)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder searched for the run's results when no --result is given",
    )
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        help="the pretraining log (default: logs/pretrain/RUN.log)",
    )
    p = sub.add_parser("verify", help="check a release folder and rerun its kNN evaluation")
    p.add_argument("folder", type=Path, help="a folder written by halp release")
    p.add_argument(
        "--data", type=Path, default=None, help="the kNN benchmark folder (default: the recorded)"
    )
    p.add_argument("--device", default="cpu", help="device of the kNN rerun (default cpu)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="accepted |rerun - recorded| kNN top-1, in points (default 0: equal)",
    )
    p.add_argument("--no-rerun", action="store_true", help="skip the kNN rerun")


def build_parser() -> argparse.ArgumentParser:
    """The ``halp`` argument parser with every verb and its options."""
    parser = argparse.ArgumentParser(prog="halp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"halp {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of user errors too"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_synth(sub)
    _add_pretrain(sub)
    _add_evaluate(sub)
    _add_graphcl(sub)
    _add_fetch(sub)
    _add_tables(sub)
    _add_figures(sub)
    _add_smoke(sub)
    _add_release(sub)
    return parser


def _workers(value: int | None) -> int:
    from halp.data.prepare import default_workers
    from halp.errors import HalpError

    if value is not None and value < 1:
        raise HalpError(f"--workers must be at least 1, got {value}")
    return default_workers() if value is None else value


def run_prepare(args: argparse.Namespace) -> None:
    """``halp prepare``: raw data (or CMD/ISC arrays) to a prepared dataset folder."""
    from halp.data import prepare
    from halp.errors import UsageError

    start = time.perf_counter()
    if args.kind in ("ntu60", "ntu120"):
        if args.recipe == "crossclr" and args.compaction is not None:
            raise UsageError(
                "--compaction belongs to the 2s-AGCN recipe; the crossclr recipe has none"
            )
        summary = prepare.prepare_ntu(
            args.kind,
            args.raw,
            args.out,
            workers=_workers(args.workers),
            skip_bad=args.skip_bad,
            compaction=args.compaction or "all",
            expect_complete=args.expect_complete,
            recipe=args.recipe,
        )
    elif args.kind == "pku2":
        if args.recipe != "2s-agcn":
            raise UsageError(
                f"--recipe {args.recipe} is implemented for NTU RGB+D only; PKU-MMD is "
                "prepared with the 2s-AGCN recipe (leave --recipe out)"
            )
        summary = prepare.prepare_pku(
            args.raw,
            args.out,
            workers=_workers(args.workers),
            skip_bad=args.skip_bad,
            compaction=args.compaction or "all",
        )
    elif args.kind == "nwucla":
        try:
            val_subjects = [int(v) for v in args.val_subjects.split(",")]
        except ValueError:
            raise UsageError(
                f"--val-subjects {args.val_subjects!r}: give subject numbers like 9,10"
            ) from None
        summary = prepare.prepare_nwucla(
            args.raw,
            args.out,
            workers=_workers(args.workers),
            skip_bad=args.skip_bad,
            num_frames=args.frames,
            drop_single_frame=args.drop_single_frame,
            val_subjects=val_subjects,
            expect_complete=args.expect_complete,
        )
    elif args.kind == "tu":
        from halp.data.tu import TU_URL, prepare_tu

        raw = prepare_tu(args.name, args.out, args.source, args.url or TU_URL)
        print(f"wrote {raw} (verified) in {time.perf_counter() - start:.1f} s")
        return
    else:
        summary = prepare.import_cmd(args.src, args.out, args.dataset, args.benchmark)
    for line in summary.lines():
        print(line)
    print(f"wrote {summary.out} in {time.perf_counter() - start:.1f} s")


def run_synth(args: argparse.Namespace) -> None:
    """``halp synth``: write a synthetic dataset in the real raw formats."""
    from halp.data import synthetic

    if args.kind == "tu":
        from halp.data import tu

        arrays = tu.synthetic_tu(args.graphs, args.seed)
        tu.write_tu(args.out, args.name, arrays)
        print(f"wrote {arrays.num_graphs} graphs as {args.out}/{args.name}_*.txt (TU format)")
    elif args.kind == "ntu":
        files = synthetic.synth_ntu(args.out, args.classes, args.per_class, args.seed)
        print(f"wrote {len(files)} NTU .skeleton files under {args.out}")
    elif args.kind == "nwucla":
        files = synthetic.synth_nwucla(args.out, args.classes, args.per_class, args.seed)
        print(f"wrote {len(files)} NW-UCLA all_sqe .json files under {args.out}")
    else:
        written = synthetic.synth_pku(args.out, args.classes, args.per_class, args.seed)
        print(f"wrote {len(written['skeleton'])} PKU-MMD videos under {args.out}")


def run_pretrain(args: argparse.Namespace) -> None:
    """``halp pretrain``: self-supervised pretraining of one method preset."""
    import yaml

    from halp.config import PretrainConfig, load_config, to_dict
    from halp.train import pretrain

    config = load_config(PretrainConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return
    resume = args.resume or (args.auto_resume and (args.run / "checkpoint.pt").exists())
    row = pretrain(config, args.run, resume=resume)
    print(
        f"pretraining finished: {args.run}/checkpoint.pt; last epoch: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    )


def run_evaluate(args: argparse.Namespace) -> None:
    """``halp evaluate``: one downstream protocol on a pretraining checkpoint."""
    if args.protocol == "ensemble":
        run_ensemble(args)
        return
    import yaml

    from halp.config import EvalConfig, load_config, to_dict
    from halp.errors import UsageError
    from halp.evaluate import evaluate

    overrides = [
        *args.overrides,
        f"protocol={args.protocol}",
        f"checkpoint={args.checkpoint}",
        f"data_root={args.data}",
    ]
    config = load_config(EvalConfig, args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return
    if args.out is None:
        raise UsageError("halp evaluate needs --out FILE (the results JSON to write)")
    result = evaluate(config, args.out)
    m = result["metrics"]
    spread = f" ± {m['top1_std']:.2f}" if "top1_std" in m else ""
    print(
        f"{args.protocol} top-1 {m['top1']:.2f}{spread} % on {result['dataset']} "
        f"{result['benchmark']}; wrote {args.out}"
    )


def _named(values: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments of a repeatable option, as a dict (names unique)."""
    from halp.errors import UsageError

    named: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{option} {text!r}: expected NAME=VALUE")
        if name in named:
            raise UsageError(f"{option}: {name!r} is given twice")
        named[name] = value
    return named


def _check_results_name(out: Path, result: dict[str, Any]) -> None:
    """Refuse a result that ``halp tables`` would reject under the name ``out``."""
    import json
    import tempfile

    from halp.errors import EvaluationError, TablesError
    from halp.report.naming import EVAL_NAME, TRANSFER_NAME
    from halp.report.results import read_result

    if not (EVAL_NAME.match(out.name) or TRANSFER_NAME.match(out.name)):
        log.warning("%s is not a results file name; halp tables will not read it", out)
        return
    with tempfile.TemporaryDirectory() as folder:  # the tables' own reader, on a copy
        probe = Path(folder) / out.name
        probe.write_text(json.dumps(result), encoding="utf-8")
        try:
            read_result(probe)
        except TablesError as err:
            raise EvaluationError(f"{out}: {str(err).removeprefix(f'{probe}: ')}") from None


def run_ensemble(args: argparse.Namespace) -> None:
    """``halp evaluate ensemble``: late fusion of saved classifier scores."""
    from halp.errors import UsageError
    from halp.eval.ensemble import ensemble

    members = {name: Path(path) for name, path in _named(args.member, "--member").items()}
    if len(members) < 2:
        raise UsageError(f"an ensemble needs 2 or more --member, got {len(members)}")
    weights = {}
    for name, text in _named(args.weight, "--weight").items():
        try:
            weights[name] = float(text)
        except ValueError:
            raise UsageError(f"--weight {name}={text}: not a number") from None
    result = ensemble(members, weights, args.out, check=_check_results_name)
    m = result["metrics"]
    parts = ", ".join(
        f"{name} {row['top1']:.2f} x {row['weight']:g}" for name, row in m["members"].items()
    )
    print(
        f"ensemble top-1 {m['top1']:.2f} % on {result['dataset']} {result['benchmark']} "
        f"({parts}); wrote {args.out}"
    )


def run_graphcl(args: argparse.Namespace) -> None:
    """``halp graphcl``: pretrain GraphCL(+HaLP) on a TU dataset, then the SVM protocol."""
    import yaml

    from halp.config import GraphCLConfig, load_config, to_dict
    from halp.errors import UsageError
    from halp.graphcl import run

    config = load_config(GraphCLConfig, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return
    if args.out is None:
        raise UsageError("halp graphcl needs --out FILE (the per-seed results JSON to write)")
    run(config, args.out, log=log.info)
    print(f"wrote {args.out}")


def run_graphcl_summary(args: argparse.Namespace) -> None:
    """``halp graphcl-summary``: mean ± std over seeds of per-seed graph results."""
    from halp.report.graphs import summarise

    s = summarise(args.seeds, args.out)
    spread = "" if s["std"] is None else f" ± {s['std']:.2f}"
    print(f"{s['dataset']} {s['method']}: {s['mean']:.2f}{spread} over seeds {s['seeds']}")


def run_fetch(args: argparse.Namespace) -> None:
    """``halp fetch``: download a file, keeping it only if its sha256 matches."""
    from halp.data.fetch import fetch

    print(f"wrote {fetch(args.url, args.out, args.sha256)}")


def run_tables(args: argparse.Namespace) -> None:
    """``halp tables``: the paper's tables, reproduced next to the published numbers."""
    from halp.report.tables import run_tables as tables

    tables(args)


def run_figures(args: argparse.Namespace) -> None:
    """``halp figures``: training curves and semi-supervised plots."""
    from halp.report.figures import run_figures as figures

    figures(args)


def run_smoke(args: argparse.Namespace) -> None:
    """``halp smoke``: the embedded default run on synthetic data."""
    from halp.smoke import run_smoke as smoke

    smoke(args.out, workers=_workers(args.workers), seed=args.seed)


def run_release(args: argparse.Namespace) -> None:
    """``halp release``: write the release folder of a finished run."""
    from halp.release import release

    made = release(args.run, args.out, args.result, args.results, args.log)
    print(
        f"wrote {made.folder}: {made.encoder.name}, {len(made.results)} result(s), "
        "README.md, SHA256SUMS"
    )


def run_verify(args: argparse.Namespace) -> None:
    """``halp verify``: check a release folder; any mismatch is an error (exit 2)."""
    from halp.release import verify

    done = verify(args.folder, args.data, args.device, args.tolerance, not args.no_rerun, say=print)
    print(f"{args.folder}: verified ({done.files} files)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``halp`` command line; returns the exit status."""
    from halp.errors import HalpError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s: %(message)s"
    )
    handlers = {
        "prepare": run_prepare,
        "synth": run_synth,
        "pretrain": run_pretrain,
        "evaluate": run_evaluate,
        "graphcl": run_graphcl,
        "graphcl-summary": run_graphcl_summary,
        "fetch": run_fetch,
        "tables": run_tables,
        "figures": run_figures,
        "smoke": run_smoke,
        "release": run_release,
        "verify": run_verify,
    }
    try:
        handlers[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"halp {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    except (HalpError, OSError) as err:
        if args.debug:
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"halp {args.command}: error: {' '.join(lines)}", file=sys.stderr)  # one line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
