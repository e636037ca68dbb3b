"""Fix-ups applied to a transformers model after it is built, loaded or unpickled.

They repair transformers defaults and per-process state rather than build anything, and apply
to tiny and real checkpoints alike, so the builders and loaders share them from here.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast


def set_generation_defaults(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Greedy decoding with pad/eos known, so batched evaluation is deterministic and quiet.

    Sampling-only flags are cleared: a greedy config that keeps them cannot be saved.
    """
    gc = model.generation_config
    if gc.pad_token_id is None:
        gc.pad_token_id = tokenizer.pad_token_id
    if gc.eos_token_id is None:
        gc.eos_token_id = tokenizer.eos_token_id
    if gc.bos_token_id is None:
        gc.bos_token_id = tokenizer.bos_token_id
    gc.do_sample = False
    for flag in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        setattr(gc, flag, None)


def reregister_output_capture(model: torch.nn.Module) -> torch.nn.Module:
    """Refill transformers' per-process output-capture registry after unpickling (G5).

    transformers 5.23 fills ``_CAN_RECORD_REGISTRY`` in ``PreTrainedModel.__init__``; a model
    unpickled in a fresh process (ddp_spawn, ``torch.load`` of a whole model) skips it, and LLaVA's
    vision tower then returns ``hidden_states=None``.
    """
    from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
    return model
