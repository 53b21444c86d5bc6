"""Train any network of the ResNet family: python train.py model=resnet50 data=cifar10 [field=value ...]"""

import hydra
from omegaconf import DictConfig

from resnets.config import register_configs

register_configs()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from resnets.engine.trainer import train

    return train(cfg)


if __name__ == "__main__":
    main()
