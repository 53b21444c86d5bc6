"""Train any network of the ResNet family: python train.py model=resnet50 data=cifar10 [field=value ...]"""

import os
import sys

import hydra
from omegaconf import DictConfig

from resnets.config import register_configs

register_configs()

if int(os.environ.get("RANK", "0")) > 0:
    # torchrun workers other than rank 0 write nothing: rank 0 alone owns the run directory
    sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from resnets.engine.cli import run_train

    return run_train(cfg)


if __name__ == "__main__":
    from resnets.cli_errors import run_hydra_main  # bad overrides: one line, exit 2

    run_hydra_main(main)
    from resnets.engine.sweep import exit_status

    sys.exit(exit_status())  # after -m: the number of jobs that failed
