"""``python -m unlearn.bench.gpu_smoke``: the cells, the default strategies with and without
CUDA, the trainer overrides, the status of a run from its output, the console table and the
Markdown page (exact strings); one slow real cell on the CPU."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from unlearn.bench import gpu_smoke
from unlearn.bench.gpu_smoke import (
    Cell,
    Result,
    cell_text,
    cells,
    classify,
    default_strategies,
    markdown_table,
    page,
    parse_args,
    print_table,
    strategy_overrides,
)
from unlearn.errors import UserError

REFUSAL = ("method='mmunlearner' cannot train under trainer='fsdp' (FSDP): its gradient masks "
           "are shaped like the whole parameters; use trainer=ddp or a single device")
TRACEBACK = """[2026-12-02 01:44:36][unlearn.vanilla][INFO] - vanilla fine-tune on 339 items
Traceback (most recent call last):
  File "unlearn/pipeline.py", line 240, in run
    trainer = fit(model, processor)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB
"""


def result(family: str, method: str, strategy: str, status: str = "ok", seconds: float = 12.4,
           peak: int | None = None, detail: str = "") -> Result:
    return Result(Cell(family, method, strategy), status, seconds, peak, detail)


RESULTS = [
    result("tiny_llava", "ga", "gpu", peak=858993459),             # 0.8 GiB
    result("tiny_llava", "ga", "fsdp", seconds=20.6, peak=36700160),  # 35 MiB
    result("tiny_llava", "mmunlearner", "gpu", seconds=9.5, peak=3 * 2**30),
    result("tiny_llava", "mmunlearner", "fsdp", "refused", 7.0, detail=REFUSAL),
    result("tiny_qwen2vl", "ga", "gpu", "failed", 30.2, detail="torch.OutOfMemoryError: CUDA"),
    result("tiny_qwen2vl", "ga", "fsdp", "timeout", 600.0),
]


def test_cells_go_family_by_family_then_method_then_strategy():
    got = cells(["tiny_llava", "tiny_qwen2vl"], ["ga", "npo"], ["gpu", "fsdp"])
    assert [(c.family, c.method, c.strategy) for c in got] == [
        ("tiny_llava", "ga", "gpu"), ("tiny_llava", "ga", "fsdp"),
        ("tiny_llava", "npo", "gpu"), ("tiny_llava", "npo", "fsdp"),
        ("tiny_qwen2vl", "ga", "gpu"), ("tiny_qwen2vl", "ga", "fsdp"),
        ("tiny_qwen2vl", "npo", "gpu"), ("tiny_qwen2vl", "npo", "fsdp")]


def test_default_strategies_cpu_one_and_several_gpus():
    assert default_strategies(0) == ["cpu", "fsdp_cpu"]
    assert default_strategies(1) == ["gpu", "fsdp"]
    assert default_strategies(4) == ["gpu", "fsdp", "fsdp:4"]


@pytest.mark.parametrize("devices, strategies, out", [
    (0, ["cpu", "fsdp_cpu"], None),
    (2, ["gpu", "fsdp", "fsdp:2"], gpu_smoke.REPORT),
])
def test_parse_args_defaults_follow_cuda(devices, strategies, out):
    args = parse_args([], devices)
    assert args.strategies == strategies and args.out == out
    assert args.families == ["tiny_llava", "tiny_qwen2vl", "tiny_qwen25vl"]
    assert len(args.methods) == 13 and {"ga", "none", "mmunlearner", "vkd"} <= set(args.methods)


def test_main_without_cuda_is_the_cpu_rehearsal(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_smoke.torch.cuda, "device_count", lambda: 0)
    ran = []
    monkeypatch.setattr(gpu_smoke, "run_cell", lambda cell, work, stamp, timeout: (
        ran.append((cell.strategy, work, timeout)) or Result(cell, "ok", 3.0)))
    results = gpu_smoke.main(["--families", "tiny_llava", "--methods", "ga",
                              "--work", str(tmp_path), "--timeout", "50"])
    assert [r.cell.strategy for r in results] == ["cpu", "fsdp_cpu"]
    assert ran == [("cpu", tmp_path, 50.0), ("fsdp_cpu", tmp_path, 50.0)]
    out = capsys.readouterr().out
    assert out.startswith("no CUDA device: this is the CPU rehearsal of the GPU smoke check "
                          "(strategies cpu,fsdp_cpu); no page is written without --out\n"
                          "[1/2] tiny_llava ga cpu: ok 3 s\n[2/2] tiny_llava ga fsdp_cpu: ok 3 s\n")
    assert "page:" not in out


def test_main_exits_1_on_a_failed_cell_and_writes_the_page(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_smoke.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(gpu_smoke, "device_name", lambda: "NVIDIA H200")
    fake = {"gpu": ("failed", "RuntimeError: boom"), "fsdp": ("refused", REFUSAL)}
    monkeypatch.setattr(gpu_smoke, "run_cell", lambda cell, work, stamp, timeout: Result(
        cell, fake[cell.strategy][0], 1.0, None, fake[cell.strategy][1]))
    out = tmp_path / "smoke.md"
    with pytest.raises(SystemExit) as stop:
        gpu_smoke.main(["--families", "tiny_llava", "--methods", "mmunlearner",
                        "--work", str(tmp_path), "--out", str(out)])
    assert stop.value.code == 1
    text = out.read_text()
    assert text.startswith("# GPU smoke check (`make gpu-smoke`)\n\n<!-- bench:begin -->\n")
    assert "NVIDIA H200" in text and "| mmunlearner | FAILED | refused |" in text


def test_strategy_overrides():
    assert strategy_overrides("cpu") == ["trainer=cpu"]
    assert strategy_overrides("fsdp_cpu") == ["trainer=fsdp_cpu"]
    assert strategy_overrides("ddp_cpu:3") == ["trainer=ddp_cpu", "trainer.devices=3"]
    # a GPU trainer: one device unless said (conf/trainer/gpu.yaml and fsdp.yaml are bf16)
    assert strategy_overrides("gpu") == ["trainer=gpu", "trainer.devices=1"]
    assert strategy_overrides("fsdp") == ["trainer=fsdp", "trainer.devices=1"]
    assert strategy_overrides("fsdp:4") == ["trainer=fsdp", "trainer.devices=4"]


def test_a_gpu_trainer_without_bf16_is_run_in_bf16(monkeypatch, tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "gpu32.yaml").write_text("accelerator: gpu\nprecision: 32-true\n")
    monkeypatch.setattr(gpu_smoke, "CONF", tmp_path)
    assert strategy_overrides("gpu32") == ["trainer=gpu32", "trainer.devices=1",
                                           "trainer.precision=bf16-mixed"]


@pytest.mark.parametrize("strategy, message", [
    ("tpu", "strategy 'tpu': no conf/trainer/tpu.yaml (expected one of cpu, ddp, ddp_cpu, "
            "fsdp, fsdp_cpu, gpu, optionally with :N devices)"),
    ("fsdp:0", "strategy 'fsdp:0': the device count after ':' must be an integer >= 1, "
               "got '0'"),
])
def test_bad_strategy_is_one_line(strategy, message):
    with pytest.raises(UserError) as err:
        strategy_overrides(strategy)
    assert str(err.value) == message


def test_bad_family_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_smoke.main(["--families", "tiny_llava,llava"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: --families: unknown ['llava'] (expected a comma-separated list of "
        "tiny_llava, tiny_qwen2vl, tiny_qwen25vl)\n")


def test_cell_overrides_put_each_family_under_its_own_root():
    got = Cell("tiny_qwen2vl", "npo", "fsdp:2").overrides(Path("/w"), Path("/w/run"))
    assert got[:5] == ["paths.root=/w/tiny_qwen2vl", "model=tiny_qwen2vl", "method=npo",
                       "trainer=fsdp", "trainer.devices=2"]
    assert got[-1] == "hydra.run.dir=/w/run"
    assert "model.tiny.size=tiny" in got and "method.epochs=1" in got
    assert Cell("tiny_llava", "npo", "fsdp:2").slug == "npo_fsdpx2"


@pytest.mark.parametrize("returncode, output, expected", [
    (0, "done\n", ("ok", "")),
    (None, "step 3/8\n", ("timeout", "")),
    (1, f"[INFO] - benchmark\nerror: {REFUSAL}\n", ("refused", REFUSAL)),
    (1, TRACEBACK, ("failed", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                              "2.00 GiB")),
    # a UserError that is not FSDP's refusal is a failure
    (1, "error: model.dtype='bfloat16' needs a GPU\n",
     ("failed", "model.dtype='bfloat16' needs a GPU")),
    (-9, "step 1/8\nKilled\n", ("failed", "Killed")),
    (139, "", ("failed", "exit status 139")),
])
def test_classify(returncode, output, expected):
    assert classify(returncode, output) == expected


def test_cell_texts():
    assert [cell_text(r) for r in RESULTS] == [
        "ok 12 s 0.8 GiB", "ok 21 s 35 MiB", "ok 10 s 3.0 GiB", "refused", "FAILED", "TIMEOUT"]
    assert cell_text(result("tiny_llava", "ga", "cpu")) == "ok 12 s"  # no GPU measurement
    # MiB below 0.1 GiB (107374182.4 bytes)
    assert gpu_smoke.memory_text(107374183) == "0.1 GiB"
    assert gpu_smoke.memory_text(107374182) == "102 MiB"


def test_markdown_table():
    assert markdown_table(RESULTS) == (
        "| method | tiny_llava gpu | tiny_llava fsdp | tiny_qwen2vl gpu | tiny_qwen2vl fsdp |\n"
        "|---|---:|---:|---:|---:|\n"
        "| ga | ok 12 s 0.8 GiB | ok 21 s 35 MiB | FAILED | TIMEOUT |\n"
        "| mmunlearner | ok 10 s 3.0 GiB | refused |  |  |")


def test_console_table():
    console = Console(record=True, width=120, color_system=None)
    print_table(RESULTS[:4], title="python -m unlearn.bench.gpu_smoke [x]", console=console)
    assert console.export_text() == (
        "python -m unlearn.bench.gpu_smoke [x]\n"
        "┏━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓\n"
        "┃ method      ┃  tiny_llava gpu ┃ tiny_llava fsdp ┃\n"
        "┡━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩\n"
        "│ ga          │ ok 12 s 0.8 GiB │  ok 21 s 35 MiB │\n"
        "│ mmunlearner │ ok 10 s 3.0 GiB │         refused │\n"
        "└─────────────┴─────────────────┴─────────────────┘\n")


def test_page():
    text = page("python -m unlearn.bench.gpu_smoke", "2026-12-02T10:00:00+00:00", "abc123",
                "NVIDIA H200", 90.0, RESULTS)
    assert text == (
        "<!-- bench:begin -->\n"
        "`python -m unlearn.bench.gpu_smoke` — 2026-12-02T10:00:00+00:00, commit `abc123`, "
        "NVIDIA H200, 1.5 min; 3 ok, 1 refused, 2 failed or timed out of 6 cells.\n\n"
        + markdown_table(RESULTS) + "\n\n"
        f"- tiny_llava · mmunlearner · fsdp: **refused** — {REFUSAL}\n"
        "- tiny_qwen2vl · ga · gpu: **failed** — torch.OutOfMemoryError: CUDA\n"
        "- tiny_qwen2vl · ga · fsdp: **timeout** after 600 s\n"
        "<!-- bench:end -->\n")


@pytest.mark.slow
def test_one_real_cell_on_cpu(tmp_path):
    [got] = gpu_smoke.main(["--families", "tiny_llava", "--methods", "ga", "--strategies",
                            "cpu", "--work", str(tmp_path), "--timeout", "300"])
    assert (got.status, got.detail, got.peak_gpu_bytes) == ("ok", "", None)
    [run_dir] = (tmp_path / "tiny_llava" / "runs").glob("*/ga_cpu")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["peak_gpu_bytes"] is None and manifest["model"]["name"] == "tiny_llava"
    assert "unlearning (ga)" in run_dir.with_suffix(".log").read_text()
    assert 0 < got.seconds < 300


def test_a_cell_past_its_timeout_is_killed(tmp_path):
    got = gpu_smoke.run_cell(Cell("tiny_llava", "ga", "cpu"), tmp_path, "stamp", timeout=0.5)
    assert (got.status, got.detail, got.peak_gpu_bytes) == ("timeout", "", None)
    assert 0.5 <= got.seconds < 5
    assert cell_text(got) == "TIMEOUT"
