# The poster's graph table: GraphCL and GraphCL+HaLP on TU datasets (CPU-sized).
# data/tu/NAME/raw (verified) -> one result per seed -> mean ± std per dataset and method.
# File names: results/tu_{dataset}_{method}_svm.json, dataset in lower case, method
# graphcl or graphcl-halp (halp.report.naming).


rule synth_tu:
    output:
        directory("raw/synthetic/tu/{name}"),
    log:
        "logs/synth_tu_{name}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp synth tu --out {output} --name {wildcards.name} --seed 0 > {log} 2>&1"


rule prepare_tu:
    input:
        lambda w: [tu_source(w.name)] if GRAPHS["synthetic"] else [],
    output:
        os.path.join(GRAPHS["root"], "{name}", "raw", "manifest.json"),
    log:
        "logs/prepare_tu_{name}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        root=lambda w, output: os.path.dirname(
            os.path.dirname(os.path.dirname(output[0]))
        ),
        source=lambda w: (
            f"--source {shlex.quote(tu_source(w.name))}" if tu_source(w.name) else ""
        ),
        url=lambda w: f"--url {shlex.quote(GRAPHS['url'])}" if GRAPHS.get("url") else "",
    shell:
        "halp prepare tu {wildcards.name} --out {params.root} {params.source} {params.url}"
        " > {log} 2>&1"


rule graphcl_seed:
    input:
        lambda w: os.path.join(GRAPHS["root"], TU_NAMES[w.tud], "raw", "manifest.json"),
    output:
        "results/graphs/tu_{tud}_{gmethod}_seed{seed}.json",
    log:
        "logs/graphcl_{tud}_{gmethod}_seed{seed}.log",
    threads: GRAPHS["threads"]
    resources:
        mem_mb=GRAPHS["mem_mb"],
        runtime=GRAPHS["runtime"],
    params:
        args=graphcl_args,
    shell:
        "halp graphcl {params.args} --out {output} > {log} 2>&1"


rule graphcl_summary:
    input:
        lambda w: expand(
            "results/graphs/tu_{tud}_{gmethod}_seed{seed}.json",
            tud=w.tud,
            gmethod=w.gmethod,
            seed=GRAPHS["seeds"],
        ),
    output:
        "results/tu_{tud}_{gmethod}_svm.json",
    log:
        "logs/graphcl_summary_{tud}_{gmethod}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp graphcl-summary {input} --out {output} > {log} 2>&1"
