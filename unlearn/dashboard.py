"""``python -m unlearn.dashboard GROUP``: save the W&B workspace of one experiment.

The workspace (unlearn/assets/wandb_workspace.yaml) shows the runs of W&B group GROUP (the
experiment; docs/wandb.md): forget against retain accuracy per method, the change from the
base model per split, the results tables and the training loss. Saving needs the optional
``wandb-workspaces`` package and a logged-in, online W&B; logging runs needs neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from unlearn.errors import UserError

SPEC = Path(__file__).parent / "assets" / "wandb_workspace.yaml"
# the fields of the spec's panels that name a logged key
KEY_FIELDS = ("x", "y", "metric", "metrics", "table_name")


def workspace_spec(group: str, project: str = "unlearn", entity: str | None = None
                   ) -> DictConfig:
    """The spec with its group, project and entity filled in (entity: the logged-in user's
    default when None)."""
    spec = OmegaConf.load(SPEC)
    spec.group, spec.project = group, project
    spec.entity = entity if entity is not None else _default_entity()
    return spec


def logged_keys(spec: DictConfig) -> list[str]:
    """Every run key the spec's panels plot, in file order (to check them against a run)."""
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, DictConfig):
            for name, value in node.items():
                if name in KEY_FIELDS:
                    yield from ([value] if isinstance(value, str) else value)
                else:
                    yield from walk(value)
        elif isinstance(node, ListConfig):
            for item in node:
                yield from walk(item)
    return list(walk(spec.workspace))


def build_workspace(spec: DictConfig) -> Any:
    """The ``wandb_workspaces.workspaces.Workspace`` of ``spec`` (not saved)."""
    try:
        import wandb_workspaces  # noqa: F401  (instantiate imports its classes by name)
    except ImportError as err:
        raise UserError("the W&B dashboard needs the optional package wandb-workspaces: "
                        "pip install wandb-workspaces (docs/wandb.md lists its panels)") from err
    from hydra.utils import instantiate
    return instantiate(spec.workspace)


def _default_entity() -> str:
    import wandb
    entity = wandb.Api().default_entity
    if not entity:
        raise UserError("no W&B entity: pass --entity or log in with `wandb login`")
    return entity


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unlearn.dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", help="the experiment: the W&B group of its runs")
    parser.add_argument("--project", default="unlearn", help="W&B project (logger.project)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: your own)")
    args = parser.parse_args(argv)
    try:
        workspace = build_workspace(workspace_spec(args.group, args.project, args.entity))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(workspace.save().url)


if __name__ == "__main__":
    main()
