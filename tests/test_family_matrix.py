"""Every ``method`` option end to end (vanilla -> unlearn -> eval) on every tiny family.

A reduced world (4 profiles, one epoch, short generations, two eval splits) keeps the whole
matrix cheap. One ``paths.root`` per family: the vanilla model and the base evaluation are
built by the family's first cell and read from the caches by every other.

Finiteness of the losses is not asserted here: the training loop raises ``DivergenceError``
on a non-finite loss (tests/test_divergence.py), so a cell that completes trained on finite
losses only. What is asserted: ``metrics.json`` holds finite numbers for the base and the
unlearned model, and a training method trained exactly the parameters that its
``trainable_modules`` scope selects on that family.
"""

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from unlearn.bench.gpu_smoke import SMALL  # the reduced world, shared with make gpu-smoke
from unlearn.models.lora import prepare_trainable
from unlearn.pipeline import load_benchmark, run
from unlearn.vanilla import base_model

from .conftest import CONF

FAMILIES = ("tiny_llava", "tiny_qwen2vl", "tiny_qwen25vl")
METHODS = sorted(p.stem for p in (Path(CONF) / "method").glob("*.yaml"))
# methods that train nothing: method=none evaluates the base model only, method=icu the base
# model under its in-context instruction (the "unlearned" entry)
NOT_TRAINED = {"none": {"base"}, "icu": {"base", "unlearned"}}



def compose_cfg(root: Path, family: str, method: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[f"paths.root={root}", f"model={family}",
                                            f"method={method}", *SMALL])


@pytest.fixture(scope="module")
def family_root(tmp_path_factory):
    """One root per family for the whole module: its caches serve every method's cell."""
    roots: dict[str, Path] = {}

    def root(family: str) -> Path:
        if family not in roots:
            roots[family] = tmp_path_factory.mktemp(family)
        return roots[family]
    return root


@pytest.fixture(scope="module")
def expected_counts():
    """(counts ``prepare_trainable`` reports for a scope, total parameter count) on a freshly
    built family model (the architecture of the vanilla model the pipeline trains), built once
    per (family, scope)."""
    counts: dict[tuple[str, str], tuple[dict, int]] = {}

    def count(cfg) -> tuple[dict, int]:
        key = (cfg.model.name, cfg.trainable_modules.scope)
        if key not in counts:
            model, _ = base_model(cfg, load_benchmark(cfg))
            total = sum(p.numel() for p in model.parameters())
            counts[key] = prepare_trainable(model, cfg.trainable_modules)[1], total
        return counts[key]
    return count


def finite_leaves(tree) -> list[float]:
    """Every number of a nested metrics dict (a non-number leaf fails the test)."""
    if isinstance(tree, dict):
        return [v for value in tree.values() for v in finite_leaves(value)]
    assert isinstance(tree, int | float), tree
    return [float(tree)]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_method_runs_on_family(family, method, family_root, expected_counts):
    root = family_root(family)
    cfg = compose_cfg(root, family, method)
    run_dir = root / f"run_{method}"
    results = run(cfg, run_dir)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert set(metrics) == NOT_TRAINED.get(method, {"base", "unlearned"})
    for stage in metrics.values():
        assert set(stage) == {"forget", "retain"}
        values = finite_leaves(stage)
        assert len(values) == 2 * 2 * 6  # splits x (image_text, text_only) x metrics
        assert all(math.isfinite(v) for v in values)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["name"] == family
    if method in NOT_TRAINED:
        assert "parameters" not in manifest and "effective_batch_size" not in manifest
        return
    counts = manifest["parameters"]
    expected, total = expected_counts(cfg)
    assert counts == expected
    assert counts["trainable"] > 0 and counts["trainable"] + counts["frozen"] == total
    by_group = counts["by_group"]
    scope = "vision" if method == "vkd" else "all"
    assert cfg.trainable_modules.scope == scope
    if scope == "vision":
        assert by_group["language"]["trainable"] == 0 and by_group["vision"]["trainable"] > 0
    assert manifest["effective_batch_size"] == int(cfg.method.batch_size)
