# halp-repro: raw data -> pretraining -> evaluation -> the paper's tables and figures.
# The rules live in workflow/rules/, one file per stage; every step is a `halp` command.
#
#   snakemake --cores 8 --use-singularity all                     # everything, in the container
#   snakemake --cores 8 results/ntu60_xsub_halp_linear.json       # one target and its chain
#   snakemake --cores 2 --configfile config/smoke.yaml            # the tiny CPU run
from snakemake.utils import min_version, validate

min_version("9.17")


# config/config.yaml unless a complete configuration was given with --configfile (merging
# the two would keep keys of the full grid that the other file leaves out)
if "grid" not in config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


container: config["container"]


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/graphs.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        all_results(),
        graph_results(),
        nwucla_results(),
        "results/tables",
        "results/figures",
