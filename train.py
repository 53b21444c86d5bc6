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
def main(cfg: DictConfig) -> float:
    from resnets.engine.cli import USER_ERRORS
    from resnets.engine.trainer import NonFiniteLossError, train

    try:
        return train(cfg)
    except (*USER_ERRORS, NonFiniteLossError) as err:
        # bad input or a diverged run: one line naming the field or file, no traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
