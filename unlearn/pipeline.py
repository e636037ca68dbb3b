"""The whole run: benchmark -> vanilla model -> base eval -> unlearn -> eval -> results."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from unlearn import progress
from unlearn.config import build_objective, validate
from unlearn.data.benchmark import Benchmark
from unlearn.data.collate import CLEAN, Collator, View
from unlearn.data.configured import benchmark_class, load_benchmark
from unlearn.data.views import VIEW_ATTACKS, attack_view, intervention_view
from unlearn.errors import UserError
from unlearn.eval.evaluator import evaluate, few_shot_splits
from unlearn.eval.likelihood_items import likelihood_summary
from unlearn.fidelity import deviations
from unlearn.loggers import build_logger, log_results
from unlearn.methods.base import Setup
from unlearn.models.lora import merge_adapters, prepare_trainable
from unlearn.models.reference import run_reference
from unlearn.relearn import relearn_attack
from unlearn.resolvers import model_scale, scaled_values
from unlearn.results import (
    claim_run_dir,
    print_relearn,
    print_results,
    write_config,
    write_json,
    write_jsonl,
)
from unlearn.resume import stage_checkpoint
from unlearn.train import fit
from unlearn.utils import atomic_dir, build_lock, fingerprint, library_versions, plain
from unlearn.vanilla import base_model, vanilla_model

log = logging.getLogger(__name__)


def eval_splits(cfg: DictConfig, bench: Benchmark) -> dict[str, list]:
    splits = bench.eval_splits(list(cfg.eval.splits))
    shots = cfg.eval.get("few_shot") or {}
    if shots.get("enabled"):
        splits = few_shot_splits(splits, shots.ids, seed=cfg.seed,
                                 skip=plain(shots.get("skip") or {}))
    return splits


def run_eval(cfg: DictConfig, model: Any, processor: Any, splits: dict, view: View = CLEAN
             ) -> tuple[dict, list]:
    e = cfg.eval
    return evaluate(model, processor, cfg.model.family, splits,
                    max_new_tokens=e.max_new_tokens, batch_size=int(e.batch_size),
                    letter_parser=e.letter_parser, view=view, metrics=plain(e.metrics),
                    likelihood=bool(e.likelihood.enabled),
                    forget_split=benchmark_class(cfg).forget_split)


def inference_view(cfg: DictConfig) -> View:
    """What the evaluated model is shown: ``eval.intervention`` (method=icu: the ICU prompt)."""
    return intervention_view(cfg.eval.intervention, cfg.prompt_style.name,
                             plain(cfg.perturbation), seed=cfg.seed)


def eval_key(cfg: DictConfig, bench: Benchmark, provenance: dict) -> str:
    """Cache key of the base model's clean results: model, data, forget set, eval options
    (the clean results do not depend on the view and attack options: one entry serves them
    all)."""
    view_keys = ("intervention", "attack", "relearn")
    return fingerprint({"model": provenance["fingerprint"], "data": bench.fingerprint(),
                        "forget": bench.forget_ids,
                        "eval": {k: v for k, v in plain(cfg.eval).items() if k not in view_keys},
                        "family": cfg.model.family})


def base_eval(cfg: DictConfig, model: Any, processor: Any, splits: dict, key: str,
              view: View = CLEAN) -> tuple[dict, list, bool]:
    """Base-model results under ``view``, cached under the model/data/eval/view fingerprint."""
    path = Path(cfg.paths.cache_dir) / "base_eval" / key
    if not cfg.eval.cache_base:
        metrics, records = run_eval(cfg, model, processor, splits, view)
        return metrics, records, False
    with build_lock(path):
        return _cached_or_evaluated(cfg, model, processor, splits, path, view)


def _cached_or_evaluated(cfg: DictConfig, model: Any, processor: Any, splits: dict, path: Path,
                         view: View) -> tuple[dict, list, bool]:
    if (path / "metrics.json").exists():
        metrics = json.loads((path / "metrics.json").read_text())
        records = [json.loads(line) for line in (path / "generations.jsonl").open()]
        return metrics, records, True
    metrics, records = run_eval(cfg, model, processor, splits, view)
    with atomic_dir(path) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_jsonl(tmp / "generations.jsonl", records)
    return metrics, records, False


def gold_eval(cfg: DictConfig, bench: Benchmark, splits: dict, key: str
              ) -> tuple[dict, list, dict]:
    """The gold model's results on the forget split, cached: the vanilla stage on the
    benchmark's ``gold`` set (it never saw the forget people), which forget quality compares
    the evaluated models against."""
    model, processor, info = vanilla_model(cfg, bench, part="gold")
    forget = {bench.forget_split: splits[bench.forget_split]}
    metrics, records, _ = base_eval(cfg, model, processor, forget,
                                    f"{key}-gold-{info['fingerprint']}")
    return metrics, records, info


def summarize(cfg: DictConfig, results: dict, records: list[dict], gold: list[dict] | None
              ) -> dict[str, dict[str, float]]:
    """Model utility (and forget quality with a gold model) of every evaluated model."""
    lk = cfg.eval.likelihood
    forget_split = benchmark_class(cfg).forget_split
    return {stage: likelihood_summary(
        results[stage], [r for r in records if r["model"] == stage and "attack" not in r],
        forget_split=forget_split, task=lk.task, utility=list(lk.utility), gold_records=gold)
        for stage in ("base", "unlearned") if stage in results}


def objective_setup(cfg: DictConfig, bench: Benchmark, processor: Any, provenance: dict,
                    run_dir: Path) -> Setup:
    """What an objective's ``prepare`` may use; caches it builds are keyed by ``provenance``."""
    return Setup(
        collate=Collator(processor, cfg.model.family, with_answer=True,
                         loss_scope=cfg.method.loss_scope),
        batch_size=int(cfg.method.batch_size), seed=int(cfg.seed),
        cache_dir=Path(cfg.paths.cache_dir), run_dir=run_dir,
        provenance={"model": provenance["fingerprint"], "data": bench.fingerprint(),
                    "forget": list(bench.forget_ids), "family": cfg.model.family,
                    "scope": cfg.trainable_modules.scope, "loss_scope": cfg.method.loss_scope},
        bench=bench,
    )


def state_dir(cfg: DictConfig) -> Path:
    """Where the unlearning stage saves its state: keyed by the whole config (but how it is
    logged, reported and saved), so rerunning the same command finds it from a new run
    directory."""
    key = fingerprint({k: v for k, v in plain(cfg).items()
                       if k not in ("resume", "logger", "progress")})
    return Path(cfg.paths.cache_dir) / "resume" / f"{cfg.run_name}-{key}"


def git_commit() -> str:
    """HEAD of the source tree, with ``+dirty`` when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run every stage and write the run directory; returns metrics.json's content."""
    validate(cfg)
    progress.configure(cfg.progress.every_s)
    objective = build_objective(cfg)  # checks its own hyperparameters: before anything expensive
    claim_run_dir(run_dir)
    write_config(run_dir, cfg)
    states = state_dir(cfg)  # the unlearning stage's saved state, for a rerun to resume
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    timings: dict[str, float] = {}
    t0 = time.time()

    bench = load_benchmark(cfg)
    splits = eval_splits(cfg, bench)
    timings["benchmark"] = time.time() - t0

    t = time.time()
    model, processor, provenance = vanilla_model(cfg, bench)
    timings["vanilla"] = time.time() - t
    # the stage draws from its own seed; unlearning starts from the run's, built or cached
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    t = time.time()
    key = eval_key(cfg, bench, provenance)
    base_metrics, base_records, base_cached = base_eval(cfg, model, processor, splits, key)
    results: dict[str, Any] = {"base": base_metrics}
    records = [dict(r, model="base") for r in base_records]
    attack = cfg.eval.attack
    if attack in VIEW_ATTACKS:  # before training changes the model in place
        attacked, attacked_records, _ = base_eval(cfg, model, processor, splits,
                                                  f"{key}-{attack}",
                                                  attack_view(CLEAN, attack))
        results[attack] = {"base": attacked}
        records += [dict(r, model="base", attack=attack) for r in attacked_records]
    timings["base_eval"] = time.time() - t
    gold_records, gold_info = None, {}
    if cfg.eval.likelihood.enabled and cfg.eval.likelihood.forget_quality:
        t = time.time()
        results["gold"], gold_records, gold_info = gold_eval(cfg, bench, splits, key)
        records += [dict(r, model="gold") for r in gold_records]
        timings["gold"] = time.time() - t

    manifest: dict[str, Any] = {
        "run_name": cfg.run_name, "seed": cfg.seed, "git_commit": git_commit(),
        "python": platform.python_version(), "versions": library_versions(),
        "dataset": {"source": str(cfg.data.source), "fingerprint": bench.fingerprint(),
                    "forget_ratio": int(cfg.forget_ratio),
                    "forget_ids": list(bench.forget_ids)},
        "model": {"name": cfg.model.name, **provenance},
        "base_eval_cached": base_cached,
        **({"gold": gold_info} if gold_info else {}),
        "fidelity": deviations(cfg),
        "scale": {"model": model_scale(cfg), "values": scaled_values(cfg)},
    }
    logger = build_logger(cfg, run_dir)
    if objective is not None:
        t = time.time()
        model, counts = prepare_trainable(model, cfg.trainable_modules)
        log.info("trainable parameters: %s", counts)
        reference, reference_info = run_reference(cfg, model, objective, bench, processor)
        manifest |= reference_info
        # only the sets the objective consumes (GA never decodes the retain images)
        train_sets = objective.train_sets(bench.train_set)
        manifest |= objective.prepare(model, train_sets, objective_setup(
            cfg, bench, processor, provenance, run_dir))
        train_sets = {name: objective.select(name, s) for name, s in train_sets.items()}
        empty = [name for name, s in train_sets.items() if not len(s)]
        if empty:
            raise UserError(f"method={cfg.method.name!r} has nothing to train on: the {empty} "
                             f"set(s) of forget_ratio={cfg.forget_ratio} are empty")
        trainer = fit(model, processor, cfg.model.family, objective, train_sets, cfg.method,
                      cfg.trainer, seed=cfg.seed, logger=logger,
                      reference=reference, label=f"unlearning ({cfg.method.name})",
                      **stage_checkpoint(cfg, states, "unlearn"))
        model = merge_adapters(model)  # evaluation sees a plain transformers model
        timings["unlearn"] = time.time() - t
        if trainer.global_rank != 0:
            return {}
        manifest |= {
            "world_size": trainer.world_size,
            "effective_batch_size": int(cfg.method.batch_size) * trainer.world_size
            * trainer.accumulate_grad_batches,
            "parameters": counts,
        }
    view = inference_view(cfg)
    if cfg.method.objective is not None or view != CLEAN:
        t = time.time()
        results["unlearned"], new_records = run_eval(cfg, model, processor, splits, view)
        records += [dict(r, model="unlearned") for r in new_records]
        if attack in VIEW_ATTACKS:  # a fresh view: the same perturbation draws as without it
            results[attack]["unlearned"], new_records = run_eval(
                cfg, model, processor, splits, attack_view(inference_view(cfg), attack))
            records += [dict(r, model="unlearned", attack=attack) for r in new_records]
        timings["unlearned_eval"] = time.time() - t
    if attack == "relearn":
        t = time.time()
        results["relearn"], new_records, manifest["relearn"] = relearn_attack(
            cfg, model, processor, bench, splits,
            lambda m, proc, s: run_eval(cfg, m, proc, s, inference_view(cfg)),
            (lambda: base_model(cfg, bench)) if cfg.eval.relearn.control else None)
        records += new_records
        timings["relearn"] = time.time() - t

    if cfg.eval.likelihood.enabled:
        results["summary"] = summarize(cfg, results, records, gold_records)
    manifest["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    manifest["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() or None  # None: no CUDA
    write_json(run_dir / "metrics.json", results)
    write_jsonl(run_dir / "generations.jsonl", records)
    write_json(run_dir / "manifest.json", manifest)
    log_results(logger, results, records, manifest, run_dir,
                samples=int(cfg.logger.get("samples", 0)))
    shutil.rmtree(states, ignore_errors=True)  # the results stand: no resume needed
    columns = plain(cfg.eval.table)
    print_results(results, columns, title=f"{cfg.run_name}  →  {run_dir}")
    if attack in VIEW_ATTACKS:
        print_results(results[attack], columns, title=f"{cfg.run_name}  with {attack}")
    if attack == "relearn":
        print_relearn(results["relearn"], columns, title=f"{cfg.run_name}  relearning attack")
    return results
