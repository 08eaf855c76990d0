"""launcher=slurm composes into hydra-submitit-launcher's Slurm launcher: one task per GPU, resume on requeue."""
from hydra import compose, initialize_config_dir

from gdn.config import CONF_DIR, register_resolvers


def test_slurm_launcher_runs_one_task_per_gpu_and_resumes(tmp_path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["launcher=slurm", f"paths.output_root={tmp_path}", "hydra.launcher.gpus_per_node=4",
                                 "hydra.launcher.nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == 4 and launcher.nodes == 2
    assert cfg.trainer.resume == "auto"  # a requeued job continues from its SIGTERM checkpoint
