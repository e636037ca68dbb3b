"""Config resolvers, registered when ``unlearn`` is imported (before any config is composed).

``${scaled:PAPER,TINY}`` is the per-model-scale value of a hyperparameter: real models
(``model.source`` hub or local) take the papers' value, the tiny offline twins their own.
A 3M-parameter model trained from scratch does not respond to a 7B recipe (lr 2e-5 for one
epoch moves few of its answers), so each method YAML names both values side by side; a value
given on the command line replaces the whole interpolation and wins, and the resolved
``config.yaml`` and the manifest's ``scaled`` entry record which one ran.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

SCALED = re.compile(r"^\$\{scaled:\s*([^,]+?)\s*,\s*([^,]+?)\s*\}$")


def model_scale(root: DictConfig) -> str:
    """``tiny`` for the offline twins, ``paper`` for every real checkpoint."""
    return "tiny" if OmegaConf.select(root, "model.source") == "tiny" else "paper"


def _scaled(paper: Any, tiny: Any, *, _root_: DictConfig) -> Any:
    return tiny if model_scale(_root_) == "tiny" else paper


def scaled_values(cfg: DictConfig, node: str = "method") -> dict[str, dict[str, Any]]:
    """``{key: {"ran", "paper", "tiny"}}`` for every ``${scaled:…}`` value under ``node`` —
    the manifest's record of which scale's hyperparameters a run used."""
    out: dict[str, dict[str, Any]] = {}

    def walk(raw: Any, resolved: Any, key: str) -> None:
        if isinstance(raw, dict):
            for k, v in raw.items():
                walk(v, resolved[k], f"{key}.{k}")
        elif isinstance(raw, str) and (m := SCALED.match(raw)):
            paper, tiny = (_parse(x) for x in m.groups())
            out[key] = {"ran": resolved, "paper": paper, "tiny": tiny}

    sub = OmegaConf.select(cfg, node)
    if isinstance(sub, DictConfig | ListConfig):
        walk(OmegaConf.to_container(sub, resolve=False), OmegaConf.to_container(sub, resolve=True),
             node)
    return out


def _parse(text: str) -> Any:
    """The value as OmegaConf passes it to the resolver (int, float, or the text)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if not OmegaConf.has_resolver("scaled"):
    OmegaConf.register_new_resolver("scaled", _scaled)
