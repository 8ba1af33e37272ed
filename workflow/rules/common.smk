# Names, targets and command-line arguments shared by the rules.
import os
import re
import shlex

import yaml

ENSEMBLES = config.get("ensembles") or {}
_ENSEMBLE_NAMES = "|".join(re.escape(name) for name in ENSEMBLES) or "(?!)"


wildcard_constraints:
    dataset="ntu60|ntu120|pku2|nwucla",
    source="ntu60|ntu120|pku2",
    target="ntu60|ntu120|pku2",
    split="xsub|xview|xset|xview[123](-val)?",
    variant="(baseline|halp|cmd|halp_cmd|aimclr|aimclr_halp|hiclr|hiclr_halp)(-[A-Za-z0-9.]+)?",
    ensemble=_ENSEMBLE_NAMES,
    protocol="linear|knn|finetune|semi[0-9]+",


PRESETS = (
    "baseline",
    "halp",
    "cmd",
    "halp_cmd",
    "aimclr",
    "aimclr_halp",
    "hiclr",
    "hiclr_halp",
)
# the variants that evaluation trains: never an ensemble's name (fused from its members)
TRAINED_VARIANT = f"(?!(?:{_ENSEMBLE_NAMES})_)({'|'.join(PRESETS)})(-[A-Za-z0-9.]+)?"


def split_benchmark(benchmark):
    """'ntu60_xsub' -> ('ntu60', 'xsub')."""
    dataset, split = benchmark.split("_")
    return dataset, split


def ensemble_members(name):
    """An ensemble's stream -> variant mapping (config key 'ensembles')."""
    if name not in ENSEMBLES:
        raise ValueError(
            f"config key 'ensembles': no ensemble named {name!r}; "
            "define it as {members: {joint: ..., motion: ..., bone: ...}, weights: {...}}"
        )
    return ENSEMBLES[name]["members"]


def ensemble_args(wildcards):
    """--member and --weight arguments of `halp evaluate ensemble`."""
    spec = ENSEMBLES[wildcards.ensemble]
    members = " ".join(
        f"--member {stream}=results/{wildcards.dataset}_{wildcards.split}_{variant}_linear.json"
        for stream, variant in spec["members"].items()
    )
    weights = " ".join(
        f"--weight {stream}={weight}"
        for stream, weight in spec.get("weights", {}).items()
    )
    return f"{members} {weights}".strip()


def variant_spec(variant):
    """A variant name's method, extra keys, config files and data recipe, as a dict."""
    if variant in PRESETS:
        spec = {"method": variant, "set": {}}
    elif variant in config["variants"]:
        spec = config["variants"][variant]
    else:
        raise ValueError(
            f"config key 'variants': no variant named {variant!r}; "
            f"define it as {{method: ..., set: {{...}}}} under 'variants'"
        )
    return {"config": None, "recipe": "2s-agcn", "evaluate": None, **spec}


# NW-UCLA has a recipe and a skeleton layout of its own (docs/data/nwucla.md)
DATASET_KEYS = {"nwucla": {"data.recipe": "nwucla", "data.layout": "kinect20"}}


def data_keys(dataset, variant):
    """The data.recipe (and data.layout) of a run: the dataset's own, else the variant's."""
    recipe = variant_spec(variant)["recipe"]
    if dataset in DATASET_KEYS:
        if recipe != "2s-agcn":
            raise ValueError(
                f"variant {variant!r} asks for the {recipe} recipe, which {dataset} has not"
            )
        return DATASET_KEYS[dataset]
    return {"data.recipe": recipe}


def data_dir(dataset, variant):
    """Where the variant's prepared dataset lives: crossclr data under data/crossclr/."""
    if variant_spec(variant)["recipe"] == "crossclr":
        return f"data/crossclr/{dataset}"
    return f"data/{dataset}"


def run_manifest(wildcards):
    return f"{data_dir(wildcards.dataset, wildcards.variant)}/manifest.json"


def set_args(*mappings):
    """--set key=value arguments (values as YAML) from mappings, later ones winning."""
    merged = {}
    for mapping in mappings:
        merged.update(mapping or {})
    return " ".join(
        "--set "
        + shlex.quote(
            f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        )
        for key, value in sorted(merged.items())
    )


def raw_paths(dataset):
    paths = config["nwucla"]["raw"] if dataset == "nwucla" else config["raw"][dataset]
    return [paths] if isinstance(paths, str) else list(paths)


def prepare_extra(wildcards):
    """Options of `halp prepare` beyond --raw (NW-UCLA: nwucla.prepare_args)."""
    return config["nwucla"]["prepare_args"] if wildcards.dataset == "nwucla" else ""


def raw_inputs(wildcards):
    """The raw inputs that exist or that a rule makes; missing manual downloads are
    left to `halp prepare`, whose error explains where to put them."""
    paths = raw_paths(wildcards.dataset)
    if config["synthetic"] or (
        wildcards.dataset == "pku2" and config.get("pku2_download")
    ):
        return paths
    return [p for p in paths if os.path.exists(p)]


def raw_args(wildcards):
    return " ".join(f"--raw {shlex.quote(p)}" for p in raw_paths(wildcards.dataset))


def pretrain_args(wildcards):
    spec = variant_spec(wildcards.variant)
    cfg = config["pretrain"]
    own = spec["config"]
    base_config = own or cfg.get("config")
    base = f"--config {shlex.quote(base_config)} " if base_config else ""
    per_method = {} if own else cfg.get("per_method", {}).get(spec["method"], {})
    root = f"{data_dir(wildcards.dataset, wildcards.variant)}/{wildcards.split}"
    # NW-UCLA's own keys come after per_method (their epochs decide e.g. mining.start_epoch)
    nwucla = config["nwucla"]["pretrain"] if wildcards.dataset == "nwucla" else {}
    return base + set_args(
        cfg["set"],
        cfg["per_dataset"].get(wildcards.dataset, {}),
        per_method,
        nwucla,
        spec["set"],
        {
            "method": spec["method"],
            "data.root": root,
            **data_keys(wildcards.dataset, wildcards.variant),
        },
    )


def launcher():
    """halp, or torchrun over several GPUs when the pretraining asks for them."""
    gpus = config["pretrain"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} -m halp --"
    return "halp"


def evaluate_args(protocol, extra=None, variant=None, dataset=None):
    """The `halp evaluate` verb and its arguments for a target's protocol (and variant)."""
    cfg = config["evaluate"]
    # NW-UCLA's keys after the shared ones (docs/data/nwucla.md)
    if dataset == "nwucla":
        extra = {**config["nwucla"]["evaluate"], **(extra or {})}
    verb, keys = protocol, {}
    # a variant's own evaluation config is its linear protocol (e.g. AimCLR's)
    own = (
        variant_spec(variant)["evaluate"] if variant and protocol == "linear" else None
    )
    base = f"--config {shlex.quote(own)} " if own else ""
    if protocol.startswith("semi"):
        verb = "semi"
        keys = {
            "label_fraction": int(protocol[4:]) / 100,
            "repeats": cfg["semi_repeats"],
        }
    per = cfg["per_protocol"].get(verb, {})
    return verb, base + set_args(cfg["set"], per, keys, extra or {})


def target_evaluate_args(wildcards):
    """evaluate_args of a results/{dataset}_{split}_{variant}_{protocol}.json target."""
    return evaluate_args(
        wildcards.protocol, variant=wildcards.variant, dataset=wildcards.dataset
    )


def transfer_target():
    return split_benchmark(config["grid"]["transfer"]["target"])


def all_results():
    """Every results file the grid of the configuration asks for."""
    grid = config["grid"]
    targets = []
    for benchmark in grid["benchmarks"]:
        dataset, split = split_benchmark(benchmark)
        for method in grid["methods"]:
            for protocol in grid["protocols"]:
                if protocol == "knn" and dataset not in grid["knn_datasets"]:
                    continue
                targets.append(f"results/{benchmark}_{method}_{protocol}.json")
    for benchmark in grid["semi"]["benchmarks"]:
        for method in grid["methods"]:
            for percent in grid["semi"]["percents"]:
                targets.append(f"results/{benchmark}_{method}_semi{percent}.json")
    target_dataset, _ = transfer_target()
    for source in grid["transfer"]["sources"]:
        for method in grid["methods"]:
            targets.append(
                f"results/{source}_to_{target_dataset}_{method}_transfer.json"
            )
    for framework in grid.get("frameworks", []):
        for benchmark in framework["benchmarks"]:
            for variant in framework["variants"]:
                for member in (
                    ensemble_members(variant).values()
                    if variant in ENSEMBLES
                    else [variant]
                ):
                    variant_spec(member)  # a clear error for an undefined variant
                for protocol in framework["protocols"]:
                    targets.append(f"results/{benchmark}_{variant}_{protocol}.json")
    ablation = grid["ablations"]
    for variant in ablation["variants"]:
        variant_spec(variant)  # a clear error for an undefined variant
        targets.append(
            f"results/{ablation['benchmark']}_{variant}_{ablation['protocol']}.json"
        )
    if grid["overhead"]:
        targets.append("results/overhead.json")
    return sorted(set(targets))


def nwucla_results():
    """The NW-UCLA grid (config section 'nwucla'): results/nwucla_{split}_{method}_{protocol}.json."""
    cfg = config["nwucla"]
    for variant in cfg["methods"]:
        variant_spec(variant)  # a clear error for an undefined variant
    return sorted(
        f"results/nwucla_{split}_{method}_{protocol}.json"
        for split in cfg["splits"]
        for method in cfg["methods"]
        for protocol in cfg["protocols"]
    )


def all_runs():
    """The pretraining runs behind all_results(), for the figures."""
    runs = []
    for path in all_results():
        name = path.removeprefix("results/").removesuffix(".json")
        if name == "overhead":
            continue
        parts = name.split("_to_")
        if len(parts) == 2:
            source = parts[0]
            variant = parts[1].split("_", 1)[1].removesuffix("_transfer")
            runs.append(f"runs/{source}_xsub_{variant}/final.pt")
        else:
            head, _protocol = name.rsplit("_", 1)
            dataset, split, variant = head.split("_", 2)
            if variant in ENSEMBLES:  # fused from the runs of its members
                for member in ensemble_members(variant).values():
                    runs.append(f"runs/{dataset}_{split}_{member}/final.pt")
            else:
                runs.append(f"runs/{head}/final.pt")
    return sorted(set(runs))


# ---------------------------------------------------------------- graphs (graphs.smk)

GRAPHS = config["graphs"]
TU_NAMES = {name.lower(): name for name in GRAPHS["datasets"]}


wildcard_constraints:
    tud="|".join(TU_NAMES) or "none",
    gmethod="graphcl|graphcl-halp",
    seed="[0-9]+",


def tu_source(name):
    """--source for `halp prepare tu`: synthetic raw files, a configured copy, or none."""
    if GRAPHS["synthetic"]:
        return f"raw/synthetic/tu/{name}"
    return GRAPHS["source"].get(name)


def graph_results():
    """Every results file the graph table asks for."""
    return [
        f"results/tu_{name.lower()}_{method.replace('_', '-')}_svm.json"
        for name in GRAPHS["datasets"]
        for method in GRAPHS["methods"]
    ]


def graphcl_args(wildcards):
    name = TU_NAMES[wildcards.tud]
    base = f"--config {shlex.quote(GRAPHS['config'])} " if GRAPHS.get("config") else ""
    return base + set_args(
        GRAPHS["set"],
        GRAPHS["per_dataset"].get(name, {}),
        {
            "dataset": name,
            "root": GRAPHS["root"],
            "method": wildcards.gmethod.replace("-", "_"),
            "seed": int(wildcards.seed),
            "svm.workers": GRAPHS["threads"],  # torch itself runs on one thread
        },
    )
