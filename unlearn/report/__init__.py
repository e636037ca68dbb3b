"""The report of an experiment's multirun, in the paper's layout: a markdown table and a CSV
with 95 % paired bootstrap intervals over items, the paper's numbers where model and setting
match, trade-off plots, and the generated experiments page (docs/experiments.md).
``render`` builds it; ``python -m unlearn.report`` is its command line."""
