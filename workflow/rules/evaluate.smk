# Downstream evaluation (halp evaluate): one results JSON per target, and the overhead
# measurement of the paper's Table 4.


rule evaluate:
    input:
        checkpoint="runs/{dataset}_{split}_{variant}/final.pt",
        data=run_manifest,
    output:
        "results/{dataset}_{split}_{variant}_{protocol}.json",
    log:
        "logs/evaluate/{dataset}_{split}_{variant}_{protocol}.log",
    wildcard_constraints:
        variant=TRAINED_VARIANT,
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["evaluate"]["mem_mb"],
        runtime=config["evaluate"]["runtime"],
        gpu=min(config["pretrain"]["gpus"], 1),
    params:
        verb=lambda w: target_evaluate_args(w)[0],
        args=lambda w: target_evaluate_args(w)[1],
        data=lambda w: f"{data_dir(w.dataset, w.variant)}/{w.split}",
    shell:
        "halp evaluate {params.verb} --checkpoint {input.checkpoint}"
        " --data {params.data} --out {output} {params.args}"
        " > {log} 2>&1"


rule transfer:
    input:
        checkpoint="runs/{source}_xsub_{variant}/final.pt",
        data="data/{target}/manifest.json",
    output:
        "results/{source}_to_{target}_{variant}_transfer.json",
    log:
        "logs/evaluate/{source}_to_{target}_{variant}_transfer.log",
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["evaluate"]["mem_mb"],
        runtime=config["evaluate"]["runtime"],
        gpu=min(config["pretrain"]["gpus"], 1),
    params:
        split=lambda w: transfer_target()[1],
        args=lambda w: evaluate_args("transfer")[1],
    shell:
        "halp evaluate transfer --checkpoint {input.checkpoint}"
        " --data data/{wildcards.target}/{params.split} --out {output} {params.args}"
        " > {log} 2>&1"


rule overhead:
    input:
        script=workflow.source_path("../../benchmarks/bench_pretrain.py"),
    output:
        "results/overhead.json",
    log:
        "logs/overhead.log",
    threads: config["pretrain"]["threads"]
    resources:
        mem_mb=config["pretrain"]["mem_mb"],
        runtime=120,
        gpu=min(config["pretrain"]["gpus"], 1),
    params:
        args=config.get("overhead", {}).get("args", ""),
    shell:
        "python {input.script} {params.args} --json {output} > {log} 2>&1"


rule ensemble:
    input:
        lambda w: [
            f"results/{w.dataset}_{w.split}_{variant}_linear.json"
            for variant in ensemble_members(w.ensemble).values()
        ],
    output:
        "results/{dataset}_{split}_{ensemble}_linear.json",
    log:
        "logs/evaluate/{dataset}_{split}_{ensemble}_linear.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        args=ensemble_args,
    shell:
        "halp evaluate ensemble {params.args} --out {output} > {log} 2>&1"
