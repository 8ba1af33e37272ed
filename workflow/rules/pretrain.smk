# Self-supervised pretraining (halp pretrain). A run resumes from its last epoch's
# checkpoint when the job is restarted (--rerun-incomplete after a kill); final.pt appears
# only when training completes.


rule pretrain:
    input:
        data=run_manifest,
    output:
        "runs/{dataset}_{split}_{variant}/final.pt",
    log:
        "logs/pretrain/{dataset}_{split}_{variant}.log",
    threads: config["pretrain"]["threads"]
    resources:
        mem_mb=config["pretrain"]["mem_mb"],
        runtime=config["pretrain"]["runtime"],
        gpu=config["pretrain"]["gpus"],
    params:
        run="runs/{dataset}_{split}_{variant}",
        args=pretrain_args,
        launcher=launcher(),
    shell:
        "{params.launcher} pretrain --run {params.run} --auto-resume {params.args} >> {log} 2>&1"
