"""Export a checkpoint, checked against eager: python export.py ckpt=PATH format=onnx|torchscript|exported|all"""

import hydra
from omegaconf import DictConfig

from resnets.config import register_export_configs
from resnets.tool_fields import refuse_training_fields

register_export_configs()


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from resnets.deploy.cli import run_export

    return run_export(cfg)


if __name__ == "__main__":
    refuse_training_fields("export.py")  # one line, exit 2, before Hydra composes
    from resnets.cli_errors import run_hydra_main  # bad overrides: one line, exit 2

    run_hydra_main(main)
