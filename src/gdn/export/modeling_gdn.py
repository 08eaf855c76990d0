"""The transformers model of an exported gdn model (copied into the export folder; see gdn.export.huggingface).

It needs the `gdn` package installed (`pip install gdn`): the model is our own LanguageModel, built from the
config's `gdn_model` dict, so there is one implementation. Each mixer picks its backend as in gdn-train
(`backend: auto`): our Triton kernels on CUDA when they import, the PyTorch paths on the CPU.

generate() recomputes the full forward for every new token (no KV cache or recurrent state is kept between
steps): correct for every architecture, quadratic in the length; gdn-generate decodes in constant time per token.
"""
import gdn.models  # noqa: F401  (the package the config's _target_ names; transformers reports it when missing)
import torch
from hydra.utils import instantiate
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_gdn import GDNConfig


class GDNForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = GDNConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: GDNConfig):
        super().__init__(config)
        if not config.gdn_model or "_target_" not in config.gdn_model:
            raise ValueError("config.json has no gdn_model (the run's model config with its _target_): write the "
                             "folder with `gdn-export RUN --hf DIR`")
        self.model = instantiate(config.gdn_model, vocab_size=config.vocab_size, _convert_="all")
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: LanguageModel initialises its own weights, and from_pretrained loads every one of them."""

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.model.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> CausalLMOutput:
        """input_ids [B, T] -> logits [B, T, vocab]; with labels, the next-token cross-entropy (labels shifted
        inside, -100 ignored, as in transformers' causal LMs)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("padding is not supported: the recurrent mixers have no attention mask; pass "
                             "sequences of one length (or one sequence at a time) without padding")
        logits = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                     labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      **kwargs) -> dict:
        """The whole sequence so far at every step (no cache; see the module docstring)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}
