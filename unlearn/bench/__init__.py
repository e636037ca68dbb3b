"""``make bench``: performance ratios of the framework, each measured side by side in one run.

* P1 (:mod:`.step_time`): a training step through ``UnlearnModule`` + Lightning vs a bare
  PyTorch loop on the same batches (GA, NPO, Vgid; tiny and ~65M-parameter LLaVA).
* P2 (:mod:`.eval_speed`): the batched evaluator vs MLLMU-Bench's one-at-a-time loop, with
  identical predictions and metrics.
* P4 (:mod:`.memory`): peak tensor memory per method vs GA in the same trainable scope, and
  the memory switch that brings an over-target method within target.

Rows measured elsewhere (vanilla throughput, ``make run`` wall times) join the table from a
JSON file (:func:`.table.extra_rows`). Entry point: ``python -m unlearn.bench``.
"""

from unlearn.bench.memory import TensorMemory

__all__ = ["TensorMemory"]
