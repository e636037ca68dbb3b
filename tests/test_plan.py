"""``python -m unlearn.plan``: exact parameter counts from the meta-device model, hand-checked
memory figures, input validation, and predicted peaks against measured ones on the tiny models.

The measured peak is :func:`unlearn.bench.memory.measure`'s (every tensor storage alive over
two AdamW steps, exact on CPU); the planner is given the positions that measurement ran
(padded length, labelled positions, the teacher prompt's extra length) and must land within
±20 % of it. Neither side counts allocator overhead or the CUDA context.
"""

from pathlib import Path

import pytest

from unlearn.bench.memory import measure
from unlearn.bench.world import World, compose
from unlearn.data.mllmu import MLLMUBench
from unlearn.models.loading import load_model_and_processor
from unlearn.models.modules import select_trainable
from unlearn.plan import GIB, Dims, PlanError, Step, lm_layer_bytes, meta_model, plan
from unlearn.plan.__main__ import compose_plan, main
from unlearn.vanilla import tokenizer_corpus

LLAVA7B = 7_063_427_072     # llava-hf/llava-1.5-7b-hf, as the hub reports it (7.06B)
QWEN2VL7B = 8_291_375_616   # Qwen/Qwen2-VL-7B-Instruct (8.29B)
# 32 layers x r 16 x (in + out) of q, k, v, o (4096 -> 4096), gate, up (4096 -> 11008),
# down (11008 -> 4096)
LLAVA7B_LORA = 32 * 16 * (4 * 8192 + 3 * (4096 + 11008))
# CLIP's last layer (q, k, v, o; fc1; fc2; two LayerNorms) and post_layernorm: LLaVA reads
# layer -2, so they are frozen in every scope
CLIP_UNUSED = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) \
    + 2 * 2048 + 2048


def test_the_hand_counts_add_up():
    assert LLAVA7B_LORA == 39_976_960
    assert CLIP_UNUSED == 12_598_272


@pytest.mark.parametrize("name, expected, public", [("llava7b", LLAVA7B, 7.06e9),
                                                    ("qwen2vl7b", QWEN2VL7B, 8.29e9)])
def test_meta_model_counts_the_hub_checkpoints_exactly(name, expected, public):
    cfg = compose_plan([f"model={name}", "trainable_modules=all"])
    model = meta_model(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    assert total == expected
    assert abs(total / public - 1) < 0.005  # the model cards' "7.06B" / "8.29B"
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_llava7b_figures_by_hand():
    """bf16 weights (model.dtype), so gradients and AdamW states are bf16 too; DDP keeps a
    bucket copy of the gradients; FSDP over 4 divides the first three by 4."""
    ddp = plan(compose_plan(["model=llava7b", "trainable_modules=all", "trainer=ddp",
                             "trainer.devices=4", "method=ga"]))
    rows = {row.name: row.bytes for row in ddp.rows}
    trainable = LLAVA7B - CLIP_UNUSED
    assert ddp.trainable == trainable and ddp.strategy == "ddp" and ddp.devices == 4
    assert rows["gradients"] == 2 * trainable
    assert rows["optimizer states"] == 4 * trainable
    assert rows["strategy"] == 2 * trainable
    assert rows["reference / teacher"] == 0
    # 7.06B x 2 bytes = 13.16 GiB of weights (+ buffers: rotary and position tables)
    assert 13.15 < rows["weights"] / GIB < 13.17
    # at the optimizer step: weights + states + buckets + gradients + AdamW's sqrt buffer
    assert ddp.phase == "the optimizer step"
    assert ddp.peak == rows["weights"] + (4 + 2 + 2 + 2) * trainable
    assert not ddp.fits  # 78.8 GiB of tensors + 2 GiB reserve > 80 GiB
    fsdp = plan(compose_plan(["model=llava7b", "trainable_modules=all", "trainer=fsdp",
                              "trainer.devices=4", "method=vgid"]))
    shard = {row.name: row.bytes for row in fsdp.rows}
    assert fsdp.strategy == "fsdp"
    assert shard["gradients"] == rows["gradients"] / 4
    assert shard["optimizer states"] == rows["optimizer states"] / 4
    assert shard["reference / teacher"] == rows["weights"] / 4  # Vgid's frozen copy


@pytest.mark.parametrize("overrides", [["method=vgid"], ["method=ga", "trainer=fsdp",
                                                         "trainer.devices=4"],
                                       ["method=mmunlearner", "trainable_modules=all"]])
def test_the_rows_in_the_peak_add_up_to_it(overrides):
    p = plan(compose_plan(["model=llava7b", *overrides]))
    assert sum(row.bytes for row in p.rows if row.in_peak) == pytest.approx(p.peak, rel=1e-12)


def test_lora_reference_is_free_and_adapters_are_fp32():
    vgid = plan(compose_plan(["model=llava7b", "method=vgid", "trainer.devices=1"]))
    rows = {row.name: row.bytes for row in vgid.rows}
    assert vgid.trainable == LLAVA7B_LORA
    assert rows["reference / teacher"] == 0             # adapters disabled, no copy
    assert rows["gradients"] == 4 * LLAVA7B_LORA         # peft keeps adapters in fp32


def test_decoder_layer_formula_by_hand():
    """tiny_llava's decoder (h 192, i 512, 6 heads), fp32, full weights: two norms keep
    input, normalised value and output (3 x 4h each), SDPA 4 x 4h + 6 log-sum-exps, the MLP
    4 x 4i: 4608 + 3096 + 8192 bytes per position."""
    d = Dims(hidden=192, inter=512, layers=4, heads=6, kv=64, vocab=2048, v_hidden=128,
             v_inter=512, v_layers=3, v_positions=17, image_tokens=16, v_kind="clip",
             pixels=3 * 64 * 64)
    step = Step(batch=4, text_tokens=50, answer_tokens=17, instruction_tokens=0, act=4,
                checkpointing=False, trained=frozenset({"language", "vision", "projector"}))
    assert lm_layer_bytes(d, step) == 15896
    frozen = Step(**{**vars(step), "trained": frozenset({"lora"})})
    assert lm_layer_bytes(d, frozen) == 2 * 4 * 192 + 3096 + 3 * 4 * 512


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=0"], "trainer.devices=0 must be an integer >= 1"),
    (["trainer=ddp"], "trainer.devices=-1 must be an integer >= 1"),
    (["plan.strategy=zero3"], "plan.strategy='zero3' is not one of ['single', 'ddp', 'fsdp']"),
    (["plan.strategy=single", "trainer.devices=2"], "use ddp or fsdp"),
    (["trainer.strategy=deepspeed"], "the planner knows DDP, FSDP and one device"),
    (["plan.gpu_gb=0"], "plan.gpu_gb=0 must be a number > 0"),
    (["plan.gpu_gb=big"], "plan.gpu_gb='big' must be a number > 0"),
    (["plan.answer_tokens=-1"], "plan.answer_tokens=-1 must be an integer >= 0"),
    (["plan.text_tokens=0"], "plan.text_tokens=0 must be an integer >= 1"),
    (["method=none"], "method='none' does not train"),
])
def test_bad_inputs_name_the_key(overrides, message):
    with pytest.raises(PlanError) as err:
        plan(compose_plan(["model=llava7b", *overrides]))
    assert message in str(err.value)


def test_strategy_comes_from_the_trainer_or_plan_strategy():
    def strategy(*overrides):
        p = plan(compose_plan(["model=tiny_llava", *overrides]))
        return p.strategy, p.devices

    assert strategy() == ("single", 1)
    assert strategy("trainer=fsdp", "trainer.devices=4") == ("fsdp", 4)
    assert strategy("trainer=ddp_cpu") == ("ddp", 2)
    assert strategy("trainer.devices=2") == ("ddp", 2)          # auto with 2 devices
    assert strategy("trainer=fsdp", "trainer.devices=2", "plan.strategy=ddp") == ("ddp", 2)


def test_cli_prints_the_verdict(capsys):
    assert main(["model=llava7b", "method=vgid", "trainer=fsdp", "trainer.devices=4",
                 "plan.gpu_gb=80"]) == 0
    out = capsys.readouterr().out
    assert "fsdp x 4" in out and "fits 80 GiB" in out and "optimizer states" in out
    assert main(["model=llava7b", "trainer.devices=0"]) == 1
    assert "error: trainer.devices=0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def worlds(tiny_bench_dir: Path) -> dict[str, World]:
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    out = {}
    for name in ("tiny_llava", "tiny_qwen2vl"):
        cfg = compose([f"model={name}"])
        model, processor = load_model_and_processor(
            cfg.model, extra_corpus=tokenizer_corpus(bench.finetune()))
        out[name] = World((f"model={name}",), cfg, bench, model, processor)
    return out


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_qwen2vl"])
@pytest.mark.parametrize("scope", ["all", "lora"])
def test_meta_counts_equal_the_built_tiny_models(worlds, name, scope):
    """The tokenizer trained on the benchmark's texts reaches the size's full vocabulary,
    so the meta model (built without one) has the same parameters; the scope selects the
    same trainable ones."""
    world = worlds[name]
    p = plan(compose_plan([f"model={name}", f"trainable_modules={scope}"]))
    assert p.params - (p.trainable if scope == "lora" else 0) == world.parameters()
    if scope == "all":
        import copy

        assert p.trainable == select_trainable(copy.deepcopy(world.model), "all")["trainable"]


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_qwen2vl"])
@pytest.mark.parametrize("method", ["ga", "vgid"])
def test_predicted_peak_within_20_percent_of_the_measured_one(worlds, name, method):
    world = worlds[name]
    cfg = world.config(f"method={method}")
    measured = measure(world, cfg, steps=2)
    positions = measured["positions"]
    student = positions.get("forget.student", positions.get("forget"))
    teacher = positions.get("forget.teacher", student)
    d = Dims.of(meta_model(cfg.model), cfg.model)
    predicted = plan(compose_plan([
        f"model={name}", f"method={method}", f"plan.text_tokens={student[0] - d.image_tokens}",
        f"plan.answer_tokens={student[1]}", f"plan.instruction_tokens={teacher[0] - student[0]}",
    ]))
    ratio = predicted.peak / 2 ** 20 / measured["peak_mib"]
    print(f"{name} {method}: predicted {predicted.peak / 2 ** 20:.2f} MiB, measured "
          f"{measured['peak_mib']:.2f} MiB, ratio {ratio:.3f}")
    assert 0.8 <= ratio <= 1.2


def test_the_arch_block_is_no_part_of_the_vanilla_recipe():
    """model.arch only describes the checkpoint for the planner: editing it (e.g. the image
    side Qwen is assumed to see) must not invalidate a cached vanilla model."""
    from unlearn.vanilla import vanilla_key

    base = compose_plan(["model=qwen2vl7b"])
    edited = compose_plan(["model=qwen2vl7b", "model.arch.image_size=672"])
    assert vanilla_key(base, "data") == vanilla_key(edited, "data")
    assert vanilla_key(base, "data") != vanilla_key(
        compose_plan(["model=qwen2vl7b", "model.vanilla.epochs=4"]), "data")
