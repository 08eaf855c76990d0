"""The transformers config of an exported gdn model (copied into the export folder; see gdn.export.huggingface).

`gdn_model` is the training run's model config as a dict (its `_target_`, e.g. gdn.models.LanguageModel, and
keyword arguments, vocab_size left out): the modeling file builds our own model from it, so a hybrid is just a
config here as in gdn-train.
"""
from transformers import PreTrainedConfig


class GDNConfig(PreTrainedConfig):
    model_type = "gdn"

    gdn_model: dict | None = None
    vocab_size: int = 0
    hidden_size: int = 0  # gdn_model's d_model and n_layers, for transformers' own uses (generation, reports)
    num_hidden_layers: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    # LanguageModel ties (or not) its head itself (gdn_model's tie_embeddings); the export holds both weights.
    tie_word_embeddings: bool = False
    use_cache: bool = False  # the modeling code keeps no cache (generate() runs the full forward each step)
