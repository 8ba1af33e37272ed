# The paper's tables (reproduced vs published) and the figures, from whatever results exist.


rule tables:
    input:
        all_results(),
        graph_results(),
    output:
        report(
            directory("results/tables"),
            patterns=["{name}.md"],
            category="Tables",
        ),
    log:
        "logs/tables.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "halp tables --results results --out results/tables > {log} 2>&1"


rule figures:
    input:
        all_results(),
        all_runs(),
    output:
        report(
            directory("results/figures"),
            patterns=["{name}.png"],
            category="Figures",
        ),
    log:
        "logs/figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "halp figures --runs runs --results results --out results/figures > {log} 2>&1"
