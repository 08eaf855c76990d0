"""Data modules: each has vocab_size, train_batch(index) and eval_batches(), and yields `Batch`es."""
from gdn.data.batch import Batch
from gdn.data.mqar import MQARData, query_accuracy

__all__ = ["Batch", "MQARData", "TextData", "TokenData", "query_accuracy"]


def __getattr__(name: str):
    # TextData pulls in HF datasets and tokenizers (slow to import, maybe absent where only MQAR runs): load on use.
    if name == "TextData":
        from gdn.data.text import TextData

        return TextData
    if name == "TokenData":
        from gdn.data.tokens import TokenData

        return TokenData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
