"""The vanilla (knowledge-injection) stage: fine-tune the base model on every profile.

MLLMU-Bench unlearns a model that was first fine-tuned on the benchmark's ``ft_Data`` so it
knows the fictitious people. The result is cached under a hash of everything that produced
it; real models can instead name a published vanilla checkpoint (``model.vanilla.checkpoint``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, Dataset

from unlearn.data.hints import FreshHints
from unlearn.data.prompts import answer_text, build_prompt
from unlearn.data.schema import Sample
from unlearn.methods.gradient import FineTune
from unlearn.models.loading import load_checkpoint, load_model_and_processor, save_checkpoint
from unlearn.models.modules import select_trainable
from unlearn.train import fit
from unlearn.utils import atomic_dir, fingerprint, library_versions, plain

log = logging.getLogger(__name__)


def tokenizer_corpus(samples: list[Sample]) -> list[str]:
    """Texts a tiny model's tokenizer is trained on: the training prompts and answers.

    Only the segmentation is learned from them (as a pre-trained tokenizer knows the language
    and the chat format), so names, answers and instructions cost few tokens; the facts are
    learned by fine-tuning. LLaVA-format strings serve every family: the words are the same.
    """
    texts = []
    for s in samples:
        prompt = build_prompt(s, "llava", None)
        texts.append(prompt + answer_text(prompt, s.answer))
    return texts


# Raise when the stage's code changes what a config produces (2: hint items drawn fresh at
# every read instead of one fixed mixed set), so such a change never reuses a stale model.
STAGE_VERSION = 2


def vanilla_key(cfg: DictConfig, data_fingerprint: str) -> str:
    """Hash of what produces the vanilla model: model, recipe, stage code version, data, seed,
    library versions."""
    model_cfg = plain(cfg.model)
    return fingerprint({"model": model_cfg, "data": data_fingerprint, "seed": cfg.seed,
                        "trainer": plain(cfg.trainer), "versions": library_versions(),
                        "stage": STAGE_VERSION})


def vanilla_model(cfg: DictConfig, bench: Any) -> tuple[Any, Any, dict]:
    """The pre-unlearning model and processor, plus provenance for the manifest."""
    mcfg = cfg.model
    published = mcfg.vanilla.get("checkpoint")
    if published:
        pre = OmegaConf.merge(mcfg, {"source": "pretrained", "pretrained_id": published})
        model, processor = load_model_and_processor(pre)
        return model, processor, {"vanilla": published, "fingerprint": f"published:{published}"}
    key = vanilla_key(cfg, bench.fingerprint(["ft_Data"]))
    path = Path(cfg.paths.cache_dir) / "vanilla" / f"{mcfg.name}-{key}"
    info = {"vanilla": str(path), "fingerprint": key}
    if (path / "vanilla.json").exists():
        log.info("vanilla model: reusing %s", path)
        model, processor = load_checkpoint(str(path), mcfg.family, mcfg.dtype)
        return model, processor, info | {"cached": True}
    train = bench.finetune()
    model, processor = load_model_and_processor(mcfg, extra_corpus=tokenizer_corpus(train))
    counts = select_trainable(model, mcfg.vanilla.trainable)
    log.info("vanilla fine-tune on %d items, %s", len(train), counts)
    start = time.time()
    objective = FineTune(mcfg.vanilla.reduction)
    _mcq_warmup(cfg, model, processor, objective, train)
    items = _epoch_items(cfg, train)
    trainer = fit(model, processor, mcfg.family, objective, {"train": items}, mcfg.vanilla,
                  cfg.trainer, seed=cfg.seed)
    seconds = time.time() - start
    if trainer.global_rank == 0:
        with atomic_dir(path) as tmp:
            save_checkpoint(model, processor, str(tmp))
            (tmp / "vanilla.json").write_text(json.dumps(
                {"key": key, "items": len(train), "seconds": seconds,
                 "config": plain(mcfg)}, indent=2))
    return model, processor, info | {"cached": False, "seconds": round(seconds, 1)}


def _mcq_warmup(cfg: DictConfig, model: Any, processor: Any, objective: FineTune,
                train: list[Sample]) -> None:
    """The optional phase on hint items before the epochs (``model.vanilla.mcq_warmup``)."""
    warm = cfg.model.vanilla.get("mcq_warmup") or {}
    if int(warm.get("steps", 0)) <= 0:
        return
    hints = FreshHints(train, int(warm.steps) * int(warm.batch_size), seed=cfg.seed)
    log.info("multiple-choice warm-up: %d steps of %d hint items", warm.steps, warm.batch_size)
    stage = OmegaConf.merge(cfg.model.vanilla, {
        "epochs": 1, "batch_size": warm.batch_size,
        "length_groups": warm.get("length_groups", 1),
        "optim": {"lr": warm.lr, "schedule": warm.schedule}})
    fit(model, processor, cfg.model.family, objective, {"train": hints}, stage, cfg.trainer,
        seed=cfg.seed)


def _epoch_items(cfg: DictConfig, train: list[Sample]) -> list[Sample] | Dataset:
    """The items of every vanilla epoch: ``train`` plus a share ``mcq_warmup.mix`` of hint
    items drawn fresh each epoch (:class:`FreshHints`)."""
    mix = float((cfg.model.vanilla.get("mcq_warmup") or {}).get("mix", 0.0))
    n_mix = round(len(train) * mix / (1 - mix))
    if not n_mix:
        return train
    return ConcatDataset([train, FreshHints(train, n_mix, seed=cfg.seed + 1)])
