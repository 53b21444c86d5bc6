"""Score checkpoints: python evaluate.py ckpt=PATH | weights=PATH model=NAME data=NAME | sweep=DIR"""

import hydra
from omegaconf import DictConfig

from resnets.config import register_eval_configs

register_eval_configs()


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from resnets.engine.cli import run_evaluate

    return run_evaluate(cfg)


if __name__ == "__main__":
    from resnets.cli_errors import run_hydra_main  # bad overrides: one line, exit 2

    run_hydra_main(main)
