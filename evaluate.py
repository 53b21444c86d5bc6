"""Score checkpoints: python evaluate.py ckpt=PATH | weights=PATH model=NAME data=NAME | sweep=DIR"""

import hydra
from omegaconf import DictConfig

from resnets.config import register_eval_configs
from resnets.tool_fields import refuse_training_fields

register_eval_configs()


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from resnets.engine.cli import run_evaluate

    return run_evaluate(cfg)


if __name__ == "__main__":
    refuse_training_fields("evaluate.py")  # one line, exit 2, before Hydra composes
    from resnets.cli_errors import run_hydra_main  # bad overrides: one line, exit 2

    run_hydra_main(main)
