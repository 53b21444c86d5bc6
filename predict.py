"""Classify image files: python predict.py ckpt=PATH | model_file=PATH.onnx images=PATH_OR_GLOB [topk=5]"""

import hydra
from omegaconf import DictConfig

from resnets.config import register_export_configs
from resnets.tool_fields import refuse_training_fields

register_export_configs()


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from resnets.deploy.cli import run_predict

    return run_predict(cfg)


if __name__ == "__main__":
    refuse_training_fields("predict.py")  # one line, exit 2, before Hydra composes
    from resnets.cli_errors import run_hydra_main  # bad overrides: one line, exit 2

    run_hydra_main(main)
