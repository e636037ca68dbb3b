"""The vanilla (knowledge-injection) stage: fine-tune the base model on every profile.

MLLMU-Bench unlearns a model that was first fine-tuned on the benchmark's ``ft_Data`` so it
knows the fictitious people. The result is keyed by a fingerprint of its recipe (model config,
stage recipe and seed, the trainer settings that change numbers, the data's recipe, the stage
code version) and found, in this order, as: a published checkpoint the config names
(``model.vanilla.checkpoint``, e.g. MLLMU-Bench's vanilla LLaVA); the checkpoint shipped with
the project for that model (``unlearn/assets/vanilla/<model.name>``, rebuilt by ``make
vanilla``) when its recorded fingerprint equals the run's; the local cache; a fresh build.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, Dataset

from unlearn.data.configured import data_twin
from unlearn.data.hints import FreshHints, FreshOptions
from unlearn.data.prompts import answer_text, build_prompt
from unlearn.data.schema import Sample
from unlearn.methods.gradient import FineTune
from unlearn.models.loading import load_checkpoint, load_model_and_processor, save_checkpoint
from unlearn.models.modules import select_trainable
from unlearn.resume import stage_checkpoint
from unlearn.train import fit
from unlearn.utils import (
    POLL_S,
    atomic_dir,
    build_lock,
    fingerprint,
    job_id,
    job_rank,
    library_versions,
    plain,
    set_aside,
)

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


# Raise when the stage's code changes what a config produces, so such a change never reuses
# a stale model (2: hint items drawn fresh at every read; 3: the stage's own seed and trainer).
STAGE_VERSION = 3
RECORD = "vanilla.json"
SHIPPED = Path(__file__).parent / "assets" / "vanilla"
# Keys of model.vanilla that say where the model comes from, not what it is.
SOURCE_KEYS = ("checkpoint", "shipped", "trainer")
# Trainer settings that change the numbers the stage computes (not how it runs or logs).
TRAINER_NUMERICS = ("accelerator", "devices", "num_nodes", "precision", "gradient_clip_val",
                    "accumulate_grad_batches")
# Library versions whose change may move the last digits of a model's numbers.
NUMERIC_LIBRARIES = ("torch", "transformers")


def stage_trainer(cfg: DictConfig) -> DictConfig:
    """The stage's trainer: ``model.vanilla.trainer`` alone, so that the unlearning strategy
    (``trainer``: DDP, a GPU, accumulation) neither rebuilds nor changes the base model; when
    that is null, the run's ``trainer`` (then the strategy is part of the fingerprint)."""
    own = cfg.model.vanilla.get("trainer")
    return cfg.trainer if own is None else own


def vanilla_seed(cfg: DictConfig) -> int:
    """The stage's seed (``model.vanilla.seed``), apart from the run's: a seed sweep of a
    method unlearns one base model."""
    return int(cfg.model.vanilla.get("seed", 0))


def data_recipe(cfg: DictConfig, bench: Any = None) -> Any:
    """What identifies the fine-tuning data on every machine: the synthetic twin's generator
    version and arguments, else a hash of the benchmark's ``ft_Data``."""
    twin = data_twin(cfg)
    if twin is not None:
        return twin.recipe
    if bench is None:
        raise ValueError(f"data={cfg.data.name!r}: the benchmark is needed to fingerprint it")
    return bench.fingerprint("finetune")


def vanilla_recipe(cfg: DictConfig, data: Any) -> dict[str, Any]:
    """Everything that produces the vanilla model, as recorded beside it."""
    model = plain(cfg.model)
    model.pop("arch", None)  # the memory planner's copy of the checkpoint's config: no input
    model["vanilla"] = {k: v for k, v in (model.get("vanilla") or {}).items()
                        if k not in SOURCE_KEYS}
    trainer = plain(stage_trainer(cfg))
    return {"model": model, "data": data, "stage": STAGE_VERSION,
            "trainer": {k: trainer[k] for k in TRAINER_NUMERICS if k in trainer}}


def vanilla_key(cfg: DictConfig, data: Any) -> str:
    """Fingerprint of :func:`vanilla_recipe`: the cache key and the shipped model's identity.
    Library versions are recorded, not keyed (``pyproject.toml`` pins those that matter)."""
    return fingerprint(vanilla_recipe(cfg, data))


def shipped_record(name: str) -> dict[str, Any] | None:
    """The record of the checkpoint shipped for model ``name``, or None."""
    path = SHIPPED / name / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _version_drift(recorded: dict[str, str]) -> list[str]:
    """``lib a.b -> c.d`` for each numeric library whose minor version differs from the record."""
    def minor(v: str) -> str:
        return ".".join(v.split("+")[0].split(".")[:2])

    now = library_versions()
    return [f"{lib} {recorded[lib]} -> {now[lib]}" for lib in NUMERIC_LIBRARIES
            if lib in recorded and minor(recorded[lib]) != minor(now[lib])]


def base_model(cfg: DictConfig, bench: Any) -> tuple[Any, Any]:
    """The off-the-shelf model before the vanilla fine-tune, and its processor: a pretrained
    model's ``model.pretrained_id``; a tiny model exactly as :func:`_train` builds it before
    training (from ``model.tiny``, its tokenizer trained on ``ft_Data``'s texts, so it is the
    vanilla model's tokenizer). Building a tiny model seeds torch's global generator; its
    state is restored afterwards, so a run's later draws do not depend on this call."""
    if cfg.model.get("source", "pretrained") != "tiny":
        return load_model_and_processor(cfg.model)
    with torch.random.fork_rng():
        return load_model_and_processor(cfg.model,
                                        extra_corpus=tokenizer_corpus(bench.train_set("finetune")))


def vanilla_model(cfg: DictConfig, bench: Any, part: str = "finetune"
                  ) -> tuple[Any, Any, dict]:
    """The pre-unlearning model and processor, plus provenance for the manifest.

    ``part="gold"``: the same stage on the benchmark's ``gold`` set (the retain-only model that
    forget quality compares against), keyed by the forget set too and never the published or
    shipped vanilla model.
    """
    mcfg = cfg.model
    published = mcfg.vanilla.get("checkpoint") if part == "finetune" else None
    if published:
        pre = OmegaConf.merge(mcfg, {"source": "pretrained", "pretrained_id": published})
        model, processor = load_model_and_processor(pre)
        return model, processor, {"vanilla": published, "fingerprint": f"published:{published}"}
    data = data_recipe(cfg, bench)
    if part != "finetune":
        data = {"data": data, "part": part, "forget": list(bench.forget_ids)}
    recipe = vanilla_recipe(cfg, data)
    key = fingerprint(recipe)
    shipped = part == "finetune" and mcfg.vanilla.get("shipped") and shipped_record(mcfg.name)
    if shipped and shipped["key"] == key:
        drift = _version_drift(shipped.get("versions", {}))
        if drift:
            log.warning("the shipped vanilla model was built with other library versions (%s): "
                        "its numbers may differ in the last digits", ", ".join(drift))
        log.info("vanilla model: the shipped %s (fingerprint %s)", mcfg.name, key)
        model, processor = load_checkpoint(str(SHIPPED / mcfg.name), mcfg.family, mcfg.dtype)
        return model, processor, {"vanilla": f"shipped:{mcfg.name}", "fingerprint": key,
                                  "cached": True, "shipped": True}
    if shipped:
        log.info("the shipped %s vanilla model is another recipe (fingerprint %s, this run %s)",
                 mcfg.name, shipped["key"], key)
    path = Path(cfg.paths.cache_dir) / "vanilla" / f"{mcfg.name}-{key}"
    if job_rank() > 0:  # the stage's trainer spans every rank: rank 0 decides for its job
        return _follow_rank_zero(cfg, bench, path, recipe, part)
    with build_lock(path):  # concurrent jobs: one builds, the others wait and reuse
        return _cached_or_built(cfg, bench, path, recipe, part)


def _building(path: Path) -> Path:
    """The 'being built' marker of the cache entry ``path``: the id of the job whose rank 0
    builds it (:func:`unlearn.utils.job_id`), for that job's other ranks to join the build."""
    return path.with_name(f".{path.name}.building")


def _cached_or_built(cfg: DictConfig, bench: Any, path: Path, recipe: dict[str, Any],
                     part: str) -> tuple[Any, Any, dict]:
    """The cache entry at ``path`` if readable, else a fresh build of ``recipe`` saved there."""
    mcfg, key = cfg.model, fingerprint(recipe)
    info = {"vanilla": str(path), "fingerprint": key}
    if (path / RECORD).exists():
        log.info("vanilla model: reusing %s", path)
        try:
            model, processor = load_checkpoint(str(path), mcfg.family, mcfg.dtype)
            return model, processor, info | {"cached": True}
        except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt, not fatal
            aside = set_aside(path)
            log.warning("the cached vanilla model %s is unreadable (%s: %s); moved it to %s "
                        "and rebuilding", path, type(err).__name__, err, aside)
    marker = _building(path)
    marker.write_text(job_id())
    try:
        return _build(cfg, bench, path, recipe, part)
    finally:
        marker.unlink(missing_ok=True)


def _follow_rank_zero(cfg: DictConfig, bench: Any, path: Path, recipe: dict[str, Any],
                      part: str) -> tuple[Any, Any, dict]:
    """What a rank > 0 of a multi-process job (Slurm tasks, Lightning's DDP processes) does:
    join the build its rank 0 announced, else load the entry its rank 0 found. Taking the lock
    itself would deadlock (rank 0 holds it while its trainer waits for this rank)."""
    marker, job = _building(path), job_id()
    while True:
        if marker.is_file() and marker.read_text() == job:
            return _build(cfg, bench, path, recipe, part)
        if (path / RECORD).exists():
            try:
                model, processor = load_checkpoint(str(path), cfg.model.family, cfg.model.dtype)
                return model, processor, {"vanilla": str(path), "fingerprint": fingerprint(recipe),
                                          "cached": True}
            except Exception:  # noqa: BLE001 - rank 0 sets it aside and rebuilds: wait
                pass
        time.sleep(POLL_S)


def _build(cfg: DictConfig, bench: Any, path: Path, recipe: dict[str, Any], part: str
           ) -> tuple[Any, Any, dict]:
    """Run the stage on ``bench.train_set(part)`` on every rank of the job and save the entry
    from rank 0."""
    key = fingerprint(recipe)
    # a killed build resumes from the states saved here (the lock keeps other jobs out)
    states = path.with_name(f".{path.name}.resume")
    items = bench.train_set(part)
    # the gold model keeps the vanilla model's tokenizer (a tiny model trains it on the
    # fine-tuning texts; a pretrained one brings its own)
    corpus = (bench.train_set("finetune") if part != "finetune"
              and cfg.model.get("source", "pretrained") == "tiny" else None)
    model, processor, record = _train(cfg, items, states, corpus=corpus)
    record |= {"key": key, "recipe": recipe, "versions": library_versions()}
    if record.pop("rank") == 0:
        with atomic_dir(path) as tmp:
            save_checkpoint(model, processor, str(tmp))
            (tmp / RECORD).write_text(json.dumps(record, indent=2))
        shutil.rmtree(states, ignore_errors=True)
    return model, processor, {"vanilla": str(path), "fingerprint": key, "cached": False,
                              "seconds": record["seconds"]}


def _train(cfg: DictConfig, bench_train: list[Sample], states: Path,
           corpus: list[Sample] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Build the model and run the stage: the optional warm-up, then the epochs; each phase
    saves its state in ``states`` and resumes from it. A tiny model's tokenizer learns the
    texts of ``corpus`` (default: ``bench_train``)."""
    mcfg, seed = cfg.model, vanilla_seed(cfg)
    L.seed_everything(seed, workers=True, verbose=False)
    model, processor = load_model_and_processor(
        mcfg, extra_corpus=tokenizer_corpus(bench_train if corpus is None else corpus))
    counts = select_trainable(model, mcfg.vanilla.trainable)
    log.info("vanilla fine-tune on %d items, %s", len(bench_train), counts)
    start = time.time()
    objective = FineTune(mcfg.vanilla.reduction)
    trainer_cfg = stage_trainer(cfg)
    warm = _mcq_warmup(cfg, model, processor, objective, bench_train, trainer_cfg, states)
    items = _epoch_items(cfg, bench_train)
    trainer = fit(model, processor, mcfg.family, objective, {"train": items}, mcfg.vanilla,
                  trainer_cfg, seed=seed, label="vanilla epochs",
                  **stage_checkpoint(cfg, states, "epochs"))
    seconds = time.time() - start
    trained = warm + int(mcfg.vanilla.epochs) * len(items)
    return model, processor, {
        "rank": trainer.global_rank, "items": len(bench_train), "sequences": trained,
        "seconds": round(seconds, 1), "items_per_s": round(trained / seconds, 1),
        "config": plain(mcfg)}


def _mcq_warmup(cfg: DictConfig, model: Any, processor: Any, objective: FineTune,
                train: list[Sample], trainer_cfg: DictConfig, states: Path) -> int:
    """The optional phase on hint items before the epochs (``model.vanilla.mcq_warmup``);
    returns the number of sequences it trained on."""
    warm = cfg.model.vanilla.get("mcq_warmup") or {}
    if int(warm.get("steps", 0)) <= 0:
        return 0
    seed = vanilla_seed(cfg)
    hints = FreshHints(train, int(warm.steps) * int(warm.batch_size), seed=seed)
    log.info("multiple-choice warm-up: %d steps of %d hint items", warm.steps, warm.batch_size)
    # from a plain copy: a model config without `length_groups` (the Qwen twins') is
    # struct-locked and would refuse the new key
    stage = OmegaConf.merge(plain(cfg.model.vanilla), {
        "epochs": 1, "batch_size": warm.batch_size,
        "length_groups": warm.get("length_groups", 1),
        "optim": {"lr": warm.lr, "schedule": warm.schedule}})
    fit(model, processor, cfg.model.family, objective, {"train": hints}, stage, trainer_cfg,
        seed=seed, label="vanilla warm-up", **stage_checkpoint(cfg, states, "warmup"))
    return len(hints)


def _epoch_items(cfg: DictConfig, train: list[Sample]) -> list[Sample] | Dataset:
    """The items of every vanilla epoch: ``train`` (options reshuffled each epoch when
    ``reshuffle_options``, :class:`FreshOptions`) plus a share ``mcq_warmup.mix`` of hint
    items drawn fresh each epoch (:class:`FreshHints`)."""
    mix = float((cfg.model.vanilla.get("mcq_warmup") or {}).get("mix", 0.0))
    n_mix = round(len(train) * mix / (1 - mix))
    items = (FreshOptions(train, seed=vanilla_seed(cfg) + 2)
             if cfg.model.vanilla.get("reshuffle_options", False) else train)
    if not n_mix:
        return items
    return ConcatDataset([items, FreshHints(train, n_mix, seed=vanilla_seed(cfg) + 1)])
