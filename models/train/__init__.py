"""Training loops for the retrieval and ranking models."""

from models.train.item_scorer import RankerTrainConfig, train_ranker
from models.train.samples import TrainingSamples, build_samples
from models.train.two_tower import TwoTowerTrainConfig, in_batch_softmax_loss, train_two_tower

__all__ = [
    "RankerTrainConfig",
    "TrainingSamples",
    "TwoTowerTrainConfig",
    "build_samples",
    "in_batch_softmax_loss",
    "train_ranker",
    "train_two_tower",
]
