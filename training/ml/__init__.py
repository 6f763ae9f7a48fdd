"""Reward-model training in plain PyTorch and transformers, in the manner of trl's RewardTrainer.

Nothing under training.ml imports Django: a Celery task in training.tasks turns database rows into a TrainConfig
and PairExamples, calls training.ml.trainer.train, and writes the progress it reports back to the database.
"""
