"""HF `tokenizers` tokenizers: load a tokenizer.json, or train a byte-level BPE one from the corpus."""
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_DOCUMENT = "<|endoftext|>"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a HF tokenizers tokenizer.json; adds END_OF_DOCUMENT as a special token if it lacks one."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for both missing and malformed files
        raise ValueError(
            f"cannot load tokenizer {str(path)!r}: expected a Hugging Face tokenizers tokenizer.json ({err})"
        ) from err
    if tokenizer.token_to_id(END_OF_DOCUMENT) is None:
        tokenizer.add_special_tokens([END_OF_DOCUMENT])
    return tokenizer


def train_bpe_tokenizer(text_batches: Iterable[list[str]], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer of at most vocab_size tokens (never fewer than the 256 bytes + END_OF_DOCUMENT).

    Training is deterministic: the same texts in the same order give the same tokenizer.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_DOCUMENT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text_batches, trainer=trainer)
    return tokenizer


def end_of_document_id(tokenizer: Tokenizer) -> int:
    return tokenizer.token_to_id(END_OF_DOCUMENT)
