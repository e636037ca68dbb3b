"""Peak tensor memory of one training step per method and trainable scope (``make bench``).

    python -m unlearn.bench [hydra overrides, e.g. model=tiny_qwen2vl] [--steps 2]

Every case trains the same tiny model (the config's architecture and tokenizer, fresh weights:
memory does not depend on their values) on the same first ``method.batch_size`` items of each
split the objective consumes, with AdamW over its trainable parameters. A dispatch-level tracker
counts every tensor storage alive (weights, reference, gradients, optimiser state, activations
saved for backward, temporaries) and reports the peak — exact on CPU, where the allocator
offers no statistics; not a timing. Each case runs as is, with gradient checkpointing
(``method.gradient_checkpointing``) and with one backward pass per loss term
(``method.backward_per_term``: the forget term's graph is freed before the retain term's is
built).
"""

from __future__ import annotations

import argparse
import copy
import json
import weakref
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from unlearn.data.collate import Collator
from unlearn.models.loading import load_model_and_processor
from unlearn.models.lora import prepare_trainable
from unlearn.models.reference import build_reference
from unlearn.pipeline import load_benchmark
from unlearn.vanilla import tokenizer_corpus

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CASES: tuple[tuple[str, str], ...] = (
    ("ga", "all"), ("ga_diff", "all"), ("kl_min", "all"), ("npo", "all"),
    ("ga", "lora"), ("ga_diff", "lora"), ("kl_min", "lora"), ("npo", "lora"), ("po", "lora"),
    ("rmu", "lora"),
)
MIB = 2 ** 20


class TensorMemory(TorchDispatchMode):
    """Bytes of distinct tensor storages alive, and their peak, while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple[str, int], int] = {}
        self.current = self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = (storage.device.type, storage.data_ptr())
        if storage.nbytes() == 0 or key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: tuple[str, int]) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


def measure(cfg: Any, base: torch.nn.Module, processor: Any, bench: Any, steps: int,
            checkpointing: bool = False, per_term: bool = False) -> dict:
    """Peak memory of ``steps`` optimiser steps of ``cfg.method`` under its trainable scope."""
    model = copy.deepcopy(base)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    objective = instantiate(cfg.method.objective)
    model, counts = prepare_trainable(model, cfg.trainable_modules)
    reference = build_reference(model, objective.needs_reference)
    n = int(cfg.method.batch_size)
    sets = objective.train_sets(lambda name: getattr(bench, f"{name}_train")()[:n])
    collate = Collator(processor, cfg.model.family, loss_scope=cfg.method.loss_scope)
    batch = {name: collate(samples) for name, samples in sets.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg.method.optim.lr))
    tracker = TensorMemory()
    held = [*model.parameters(), *model.buffers()]
    if reference is not None:
        held += [*reference.parameters(), *reference.buffers()]
    for tensor in [*held, *(t for b in batch.values() for t in b.values())]:
        tracker.track(tensor)
    static = tracker.current
    model.train()
    with tracker:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            if per_term:
                for term in objective.terms(model, batch, reference):
                    term.loss.backward()
            else:
                objective(model, batch, reference).loss.backward()
            optimizer.step()
    return {"method": cfg.method.name, "scope": cfg.trainable_modules.scope,
            "reference": type(reference).__name__ if reference is not None else "-",
            "trainable": counts["trainable"], "static_mib": static / MIB,
            "peak_mib": tracker.peak / MIB}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (model=..., data...)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        base_cfg = compose("config", overrides=args.overrides)
        bench = load_benchmark(base_cfg)
        base, processor = load_model_and_processor(
            base_cfg.model, extra_corpus=tokenizer_corpus(bench.finetune()))
        rows = []
        for method, scope in CASES:
            cfg = compose("config", overrides=[*args.overrides, f"method={method}",
                                               f"trainable_modules={scope}"])
            row = measure(cfg, base, processor, bench, args.steps)
            row["peak_ckpt_mib"] = measure(cfg, base, processor, bench, args.steps,
                                           checkpointing=True)["peak_mib"]
            row["peak_per_term_mib"] = measure(cfg, base, processor, bench, args.steps,
                                               per_term=True)["peak_mib"]
            rows.append(row)
    ga = {r["scope"]: r for r in rows if r["method"] == "ga"}
    print(f"{'method':8} {'scope':5} {'reference':20} {'trainable':>10} {'static MiB':>10} "
          f"{'peak MiB':>9} {'÷ ga':>5} {'ckpt peak':>9} {'÷ ga':>5} {'per-term':>9} {'÷ ga':>5}")
    for r in rows:
        r["ratio_to_ga"] = r["peak_mib"] / ga[r["scope"]]["peak_mib"]
        r["ckpt_ratio_to_ga"] = r["peak_ckpt_mib"] / ga[r["scope"]]["peak_ckpt_mib"]
        r["per_term_ratio_to_ga"] = r["peak_per_term_mib"] / ga[r["scope"]]["peak_mib"]
        print(f"{r['method']:8} {r['scope']:5} {r['reference']:20} {r['trainable']:>10} "
              f"{r['static_mib']:>10.2f} {r['peak_mib']:>9.2f} {r['ratio_to_ga']:>5.2f} "
              f"{r['peak_ckpt_mib']:>9.2f} {r['ckpt_ratio_to_ga']:>5.2f} "
              f"{r['peak_per_term_mib']:>9.2f} {r['per_term_ratio_to_ga']:>5.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
