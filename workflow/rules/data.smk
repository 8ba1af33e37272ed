# Raw data -> prepared arrays (halp prepare). NTU RGB+D cannot be downloaded (registration):
# when its archives are not at the configured paths, `halp prepare` fails and says exactly
# which files to put where. PKU-MMD can be fetched with a configured URL and sha256.


rule synth_ntu:
    output:
        directory("raw/synthetic/ntu"),
    log:
        "logs/synth_ntu.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp synth ntu --out {output} --classes 6 --per-class 8 --seed 0 > {log} 2>&1"


rule synth_nwucla:
    output:
        directory("raw/synthetic/nwucla"),
    log:
        "logs/synth_nwucla.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp synth nwucla --out {output} --classes 6 --per-class 8 --seed 0 > {log} 2>&1"


rule synth_pku2:
    output:
        directory("raw/synthetic/pku2"),
    log:
        "logs/synth_pku2.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp synth pku --out {output} --classes 6 --per-class 8 --seed 0 > {log} 2>&1"


if config.get("pku2_download"):

    rule fetch_pku2:
        output:
            directory(config["raw"]["pku2"]),
        log:
            "logs/fetch_pku2.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=120,
        params:
            url=config["pku2_download"]["url"],
            sha256=config["pku2_download"]["sha256"],
            archive="raw/pku2_download.zip",
        shell:
            "(halp fetch {params.url:q} --sha256 {params.sha256} --out {params.archive}"
            " && mkdir -p {output} && python -m zipfile -e {params.archive} {output}) > {log} 2>&1"


rule prepare:
    input:
        raw_inputs,
    output:
        "data/{dataset}/manifest.json",
    log:
        "logs/prepare_{dataset}.log",
    threads: config.get("prepare_workers", 8)
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        raw=raw_args,
        extra=prepare_extra,
    shell:
        "halp prepare {wildcards.dataset} {params.raw} --out data/{wildcards.dataset}"
        " --workers {threads} {params.extra} > {log} 2>&1"


rule prepare_crossclr:
    input:
        raw_inputs,
    output:
        "data/crossclr/{dataset}/manifest.json",
    log:
        "logs/prepare_crossclr_{dataset}.log",
    wildcard_constraints:
        dataset="ntu60|ntu120",  # the recipe is NTU's (docs/data/crossclr.md)
    threads: config.get("prepare_workers", 8)
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        raw=raw_args,
    shell:
        "halp prepare {wildcards.dataset} --recipe crossclr {params.raw}"
        " --out data/crossclr/{wildcards.dataset} --workers {threads} > {log} 2>&1"
