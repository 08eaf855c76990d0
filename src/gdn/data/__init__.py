"""Data modules: each has vocab_size, train_batch(index) and eval_batches(), and yields `Batch`es."""

__all__ = ["Batch", "MQARData", "TextData", "TokenData", "query_accuracy"]

# Loaded on use: TextData pulls in HF datasets and tokenizers (slow to import, maybe absent where only MQAR runs), and
# gdn-prepare-data's tokenising processes import this package without needing torch at all.
_HOMES = {"Batch": "gdn.data.batch", "MQARData": "gdn.data.mqar", "query_accuracy": "gdn.data.mqar",
          "TextData": "gdn.data.text", "TokenData": "gdn.data.tokens"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
