"""`rerankd finetune`: adapt a cross-encoder to your domain with sentence-transformers."""

from rerankd.finetune.data import TrainQuery, TrainSet, read_train_set
from rerankd.finetune.train import FinetuneResult, TrainOptions, finetune

__all__ = ["FinetuneResult", "TrainOptions", "TrainQuery", "TrainSet", "finetune", "read_train_set"]
