"""Every config composes; bad overrides fail at once naming the key and the allowed values."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from unlearn.config import ConfigError, build_objective, validate

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CLEAR_WARMUP, CLEAR_EPOCHS = 300, 12  # conf/data/synthetic_clear.yaml: data.tiny
GROUPS = {
    "data": ["clear", "mllmu_bench", "synthetic_clear", "synthetic_mllmu"],
    "model": ["llava13b", "llava7b", "qwen25vl3b", "qwen2vl7b", "tiny_llava", "tiny_qwen25vl",
              "tiny_qwen2vl"],
    "method": ["ga", "ga_diff", "icu", "icu_t", "kl_min", "mmunlearner", "noise_t", "none", "npo",
               "po", "rmu", "vgid", "vkd"],
    "trainable_modules": ["all", "language", "lm_connector", "lora", "projector", "vision"],
    "trainer": ["cpu", "ddp", "ddp_cpu", "fsdp", "fsdp_cpu", "gpu"],
    "logger": ["csv", "none", "wandb"],
    "perturbation": ["gaussian", "none", "random_noise", "white"],
    "prompt_style": ["declarative", "none", "polite", "strict"],
}


def make(overrides=()):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_groups_have_the_documented_options():
    for group, options in GROUPS.items():
        found = sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))
        assert found == options, group


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes_and_validates(group, option):
    cfg = make([f"{group}={option}"])
    validate(cfg)


@pytest.mark.parametrize("ratio", [5, 10, 15])
def test_forget_ratio_is_a_plain_override(ratio):
    cfg = make([f"forget_ratio={ratio}"])
    validate(cfg)
    assert cfg.forget_ratio == ratio and cfg.run_name.endswith(f"_f{ratio}")


def test_defaults_follow_the_papers():
    cfg = make()
    assert cfg.model.name == "tiny_llava" and cfg.data.name == "synthetic_mllmu"
    assert cfg.method.optim.lr == 2e-5 and cfg.method.batch_size == 4 and cfg.method.epochs == 1
    ga_diff = make(["method=ga_diff"]).method
    assert ga_diff.objective._target_.endswith("GradientDifference")
    assert ga_diff.optim.lr == 4e-5  # the tiny value; the papers' 2e-5 on real models
    assert make(["method=ga_diff", "model=llava7b"]).method.optim.lr == 2e-5
    mmu = make(["method=mmunlearner"]).method
    assert (mmu.optim.lr, mmu.epochs, mmu.batch_size) == (6e-5, 1, 4)
    assert make(["method=mmunlearner", "model=qwen2vl7b"]).method.optim.lr == 1e-5
    assert (mmu.objective.beta, mmu.objective.eps, mmu.objective.schedule) == (1.0, 1e-15, "fused")
    assert make(["method=mmunlearner", "method.schedule=official"]).method.objective.schedule \
        == "official"
    assert mmu.objective.preserve_text == "full_set"  # the official code's text-only P


def test_baseline_defaults_follow_the_papers():
    """Vgid Table 7 recipe for every baseline; method hyperparameters as documented."""
    tiny_lr = {"kl_min": 2e-5, "npo": 2e-5, "po": 4e-5, "rmu": 1.5e-4}  # experiments/tiny_values.md
    tiny_epochs = {"po": 2}
    for method in ("kl_min", "npo", "po", "rmu"):
        cfg = make([f"method={method}"])
        validate(cfg)
        assert (cfg.method.optim.lr, cfg.method.batch_size, cfg.method.epochs) == (
            tiny_lr[method], 4, tiny_epochs.get(method, 1))
        paper = make([f"method={method}", "model=llava7b"]).method
        assert (paper.optim.lr, paper.epochs) == (2e-5, 1)
        assert cfg.method.loss_scope == "answer" and cfg.method.name == method
    assert make(["method=npo"]).method.objective.beta == 0.9
    assert make(["method=npo"]).method.reference.source == "initial"
    assert make(["method=npo"]).method.reference.finetune.start == "base"  # MLLMU's oracle
    assert make(["method=po"]).method.objective.beta == 0.1
    rmu = make(["method=rmu"]).method.objective
    assert (rmu.layer, rmu.steering, rmu.retain_weight) == (1, 2.0, 1.0)  # tiny: 4 layers
    for model, layer in {"llava7b": 7, "llava13b": 7, "qwen2vl7b": 7, "qwen25vl3b": 7,
                         "tiny_qwen2vl": 1, "tiny_qwen25vl": 1}.items():
        assert make(["method=rmu", f"model={model}"]).method.objective.layer == layer, model
    assert make(["method=rmu", "seed=3"]).method.objective.seed == 3
    lora = make(["trainable_modules=lora"]).trainable_modules.lora
    assert (lora.r, lora.alpha, lora.dropout) == (16, 16, 0.05)


def test_unknown_group_option_lists_the_options():
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        make(["method=gradient_ascent"])
    assert "ga_diff" in str(err.value) or "ga_diff" in str(err.value.__cause__)


@pytest.mark.parametrize(("override", "key"), [
    ("eval.letter_parser=first", "eval.letter_parser"),
    ("method.loss_scope=prompt", "method.loss_scope"),
    ("trainable_modules.scope=heads", "trainable_modules.scope"),
    ("model.family=blip", "model.family"),
    ("forget_ratio=20", "forget_ratio"),
    ("model.vanilla.reduction=sum", "model.vanilla.reduction"),
    ("eval.attack=jailbreak", "eval.attack"),
    ("eval.intervention=audio", "eval.intervention"),
    ("perturbation.name=blur", "perturbation.name"),
    ("prompt_style.name=rude", "prompt_style.name"),
    ("model.vanilla.trainable=lora", "model.vanilla.trainable"),  # a full-weight stage
    ("method.objective.reduction=sum", "method.objective.reduction"),
    ("+method.objective.kl_reduction=batchmean", "method.objective.kl_reduction"),
    ("+method.reference.source=oracle", "method.reference.source"),
    ("method=npo method.reference.finetune.start=scratch", "method.reference.finetune.start"),
    ("method=mmunlearner method.schedule=alternate", "method.schedule"),
    ("method=mmunlearner method.objective.preserve_text=ft", "method.objective.preserve_text"),
    ("model.vanilla.mcq_warmup.schedule=step", "model.vanilla.mcq_warmup.schedule"),
])
def test_bad_values_name_key_and_allowed(override, key):
    with pytest.raises(ConfigError, match=rf"{key}=.*is not one of \["):
        validate(make(override.split()))


@pytest.mark.parametrize("mix", ["1.0", "-0.1"])
def test_hint_mix_outside_unit_interval_fails(mix):
    with pytest.raises(ConfigError, match=r"model.vanilla.mcq_warmup.mix=.*must be in \[0, 1\)"):
        validate(make([f"model.vanilla.mcq_warmup.mix={mix}"]))


@pytest.mark.parametrize(("overrides", "steps", "epochs"), [
    ([], 500, 9), (["model=tiny_qwen2vl"], 700, 12), (["model=tiny_qwen25vl"], 700, 20),
    (["model=llava7b"], 0, 5),
    (["data=synthetic_clear"], CLEAR_WARMUP, CLEAR_EPOCHS),
    (["data=synthetic_clear", "model=tiny_qwen2vl"], CLEAR_WARMUP, CLEAR_EPOCHS),
    (["data=synthetic_clear", "model=llava7b"], 0, 5),  # real models keep their recipe
    (["data=synthetic_clear", "model.vanilla.mcq_warmup.steps=7", "model.vanilla.epochs=2"],
     7, 2),  # the command wins
])
def test_a_data_config_sets_the_tiny_warm_up_and_epochs(overrides, steps, epochs):
    vanilla = make(overrides).model.vanilla
    warmup = OmegaConf.select(vanilla, "mcq_warmup.steps", default=0)  # real models: none
    assert (warmup, vanilla.epochs) == (steps, epochs)


@pytest.mark.parametrize("key", ["model.vanilla.length_groups",
                                 "model.vanilla.mcq_warmup.length_groups"])
@pytest.mark.parametrize("value", ["0", "1.5"])
def test_length_groups_must_be_a_positive_integer(key, value):
    with pytest.raises(ConfigError, match=rf"{key}=.*must be an integer >= 1"):
        validate(make([f"{key}={value}"]))


@pytest.mark.parametrize(("option", "hub_id", "cls_name"), [
    ("llava7b", "llava-hf/llava-1.5-7b-hf", "LlavaForConditionalGeneration"),
    ("qwen2vl7b", "Qwen/Qwen2-VL-7B-Instruct", "Qwen2VLForConditionalGeneration"),
    ("llava13b", "llava-hf/llava-1.5-13b-hf", "LlavaForConditionalGeneration"),
    ("qwen25vl3b", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2_5_VLForConditionalGeneration"),
])
def test_real_model_configs_load_through_from_pretrained(option, hub_id, cls_name, monkeypatch):
    """The composed config reaches from_pretrained with its id and dtype (no download)."""
    import torch
    from transformers import AutoProcessor

    from unlearn.models import loading, processors, tiny

    family = make([f"model={option}"]).model.family
    model, processor = tiny.build_tiny(family, "tiny")
    calls = []

    def fake(cls, source, **kwargs):
        calls.append((cls.__name__, source, kwargs.get("dtype")))
        return model if "ForConditionalGeneration" in cls.__name__ else processor

    monkeypatch.setattr(loading.MODEL_CLASSES[family], "from_pretrained", classmethod(fake))
    for proc_cls in (AutoProcessor, *processors._NO_VIDEO.values(),
                     *processors._WITH_VIDEO.values()):
        monkeypatch.setattr(proc_cls, "from_pretrained", classmethod(fake))
    cfg = make([f"model={option}"])
    got, _ = loading.load_model_and_processor(cfg.model)
    assert got is model
    assert calls[0] == (cls_name, hub_id, torch.bfloat16)
    assert calls[1][1] == hub_id


@pytest.mark.parametrize(("override", "message"), [
    ("method.batch_size=0", "method.batch_size=0 must be an integer >= 1"),
    ("method.optim.lr=abc", "method.optim.lr='abc' must be a number > 0"),
    ("method.optim.lr=-1e-5", "method.optim.lr=-1e-05 must be a number > 0"),
    ("seed=abc", "seed='abc' must be an integer >= 0"),
    ("eval.batch_size=0", "eval.batch_size=0 must be an integer >= 1"),
    ("method.optim.betas=[2,2]", "method.optim.betas=[2, 2] must be two numbers in [0, 1)"),
    ("eval.max_new_tokens.generation=-1",
     "eval.max_new_tokens.generation=-1 must be an integer >= 1"),
    ("model.vanilla.seed=-1", "model.vanilla.seed=-1 must be an integer >= 0"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0"),
])
def test_bad_numbers_name_the_key_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        validate(make([override]))
    assert str(err.value) == message


def test_lora_rank_is_checked_only_under_lora():
    with pytest.raises(ConfigError, match=r"trainable_modules.lora.r=0 must be a number > 0"):
        validate(make(["trainable_modules=lora", "trainable_modules.lora.r=0"]))


def test_method_none_carries_placeholder_numbers():
    validate(make(["method=none", "method.optim.lr=0"]))


# --- every objective and the combinations users run -------------------------------------------

OBJECTIVE_VALUES = {  # method -> (class, hyperparameters as the objective holds them)
    "ga": ("GradientAscent", {"reduction": "token_mean"}),
    "ga_diff": ("GradientDifference", {"retain_weight": 1.0, "reduction": "token_mean"}),
    "kl_min": ("KLMinimization", {"beta": 1.0, "retain_nll_weight": 0.0,
                                  "kl_reduction": "token_mean"}),
    "npo": ("NegativePreferenceOptimization", {"beta": 0.9, "scale": 2 / 0.9,
                                               "reduction": "sequence_sum", "retain_weight": 0.0}),
    "po": ("PreferenceOptimization", {"beta": 0.1, "scale": 1.0, "reduction": "sequence_sum"}),
    "rmu": ("RMU", {"layer": 1, "steering": 2.0, "retain_weight": 1.0,
                    "target_norm": "reference", "direction": "sphere"}),
    "mmunlearner": ("MMUnlearner", {"beta": 1.0, "eps": 1e-15, "retain_weight": 1.0}),
    "vgid": ("Distillation", {"alpha": 1.0, "beta": 1.0, "temperature": 1.0,
                              "kl_positions": "answer"}),
    "icu_t": ("Distillation", {"alpha": 1.0, "beta": 1.0, "kl_positions": "answer"}),
    "noise_t": ("Distillation", {"alpha": 1.0, "beta": 1.0, "kl_positions": "answer"}),
    "vkd": ("VKD", {"layers": [-1], "projector": True, "distance": "mse",
                    "feature_weights": [1.0, 1.0], "forget_weight": 1.0, "retain_weight": 1.0,
                    "output_term": "kl", "output_weight": 0.0, "reduction": "token_mean",
                    "cache_teacher": True, "cache_forget": False, "saliency": False,
                    "mask_terms": "forget", "mask_beta": 1.0, "mask_eps": 1e-15}),
}


def test_every_method_yaml_is_listed_here():
    trains = {m for m in GROUPS["method"] if make([f"method={m}"]).method.objective is not None}
    assert trains == set(OBJECTIVE_VALUES)  # icu and none evaluate without training


@pytest.mark.parametrize("method", sorted(OBJECTIVE_VALUES))
def test_every_method_yaml_instantiates_its_objective_with_its_values(method):
    cls, values = OBJECTIVE_VALUES[method]
    objective = build_objective(make([f"method={method}"]))
    assert type(objective).__name__ == cls
    got = {k: getattr(objective, k) for k in values}
    lists = {k for k, v in values.items() if isinstance(v, list)}  # approx takes no nesting
    assert {k: got[k] for k in lists} == {k: values[k] for k in lists}
    assert {k: got[k] for k in values if k not in lists} == pytest.approx(
        {k: v for k, v in values.items() if k not in lists})


def pairwise(factors: dict[str, list[str]]) -> list[dict[str, str]]:
    """Rows covering every pair of options of every two factors (greedy, deterministic)."""
    names = list(factors)
    todo = {(a, x, b, y) for i, a in enumerate(names) for b in names[i + 1:]
            for x in factors[a] for y in factors[b]}
    rows = []
    while todo:
        a, x, b, y = min(todo)
        row = {a: x, b: y}
        for name in names:
            if name not in row:  # the option covering most open pairs with the row so far
                row[name] = max(factors[name], key=lambda v, n=name: sum(
                    (n2, row[n2], n, v) in todo or (n, v, n2, row[n2]) in todo for n2 in row))
        todo -= {(p, row[p], q, row[q]) for p in names for q in names}
        rows.append(row)
    return rows


COMBINATIONS = pairwise({k: GROUPS[k] for k in ("method", "trainable_modules", "model",
                                                 "perturbation", "prompt_style")})
SCOPES = {"all": "all", "language": "language", "lm_connector": "lm_connector", "lora": "lora",
          "projector": "projector", "vision": "vision"}
FAMILIES = {"tiny_llava": "llava", "llava7b": "llava", "llava13b": "llava",
            "tiny_qwen2vl": "qwen2_vl", "qwen2vl7b": "qwen2_vl", "tiny_qwen25vl": "qwen2_5_vl",
            "qwen25vl3b": "qwen2_5_vl"}
REAL = ("llava7b", "llava13b", "qwen2vl7b", "qwen25vl3b")


def test_the_combinations_cover_every_pair():
    assert 78 <= len(COMBINATIONS) < 100  # 13 methods x 6 scopes at least
    pairs = {(m["method"], m["trainable_modules"]) for m in COMBINATIONS}
    assert len(pairs) == 78


@pytest.mark.parametrize("row", COMBINATIONS, ids=lambda r: "-".join(r.values()))
def test_combinations_users_run_compose_validate_and_resolve(row):
    from unlearn.data.perturb import GaussianNoise, RandomNoise, White
    from unlearn.data.prompts import ICU_PROMPTS

    cfg = make([f"{k}={v}" for k, v in row.items()])
    validate(cfg)
    assert cfg.method.name == row["method"] and cfg.model.name == row["model"]
    assert cfg.model.family == FAMILIES[row["model"]]
    assert cfg.trainable_modules.scope == SCOPES[row["trainable_modules"]]  # the command wins
    assert cfg.perturbation.name == row["perturbation"]
    assert cfg.prompt_style.name == row["prompt_style"]
    real = row["model"] in REAL
    assert cfg.trainer.name == ("gpu" if real else "cpu")
    assert cfg.trainer.gradient_clip_val == (None if real else 1.0)
    same_view = {"vgid": row["perturbation"] == row["prompt_style"] == "none",
                 "icu_t": row["prompt_style"] == "none",
                 "noise_t": row["perturbation"] == "none",
                 "vkd": row["perturbation"] == "none"}.get(row["method"], False)
    if same_view:  # a teacher identical to the student teaches nothing: refused at once
        with pytest.raises(ConfigError, match=rf"method='{row['method']}': the teacher view "
                                              "equals the student's input"):
            build_objective(cfg)
        return
    objective = build_objective(cfg)
    if objective is None:
        return
    if row["method"] == "rmu":
        assert objective.layer == (7 if real else 1)
    if type(objective).__name__ == "Distillation":
        (view,) = objective.views.values()
        prompted = row["method"] != "noise_t"
        assert view.instruction.strip() == (ICU_PROMPTS[row["prompt_style"]] if prompted else "")
        transform = {"none": type(None), "gaussian": GaussianNoise, "random_noise": RandomNoise,
                     "white": White}[row["perturbation"]]
        assert isinstance(view.image_transform,
                          type(None) if row["method"] == "icu_t" else transform)
    if row["method"] == "vkd":  # the forget target: the teacher on the perturbed image only
        (view,) = objective.views.values()
        assert view.instruction == "" and type(view.image_transform).__name__ == {
            "gaussian": "GaussianNoise", "random_noise": "RandomNoise",
            "white": "White"}[row["perturbation"]]


@pytest.mark.parametrize("model", REAL)
def test_real_models_default_to_the_papers_lora_without_clipping(model):
    cfg = make([f"model={model}"])
    assert cfg.trainable_modules.scope == "lora" and cfg.trainable_modules.lora.r == 16
    assert cfg.trainer.name == "gpu" and cfg.trainer.gradient_clip_val is None
    tiny = make()
    assert tiny.trainable_modules.scope == "all" and tiny.trainer.gradient_clip_val == 1.0


def test_an_argument_the_objective_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match="method='npo': .*unexpected keyword argument 'betta'"):
        build_objective(make(["method=npo", "+method.objective.betta=0.5"]))


def test_the_manifest_names_the_deviations_in_effect():
    from unlearn.fidelity import deviations

    tiny = deviations(make(["method=ga_diff"]))
    assert tiny["doc"] == "docs/fidelity.md §3"
    assert [d.split(":")[0] for d in tiny["deviations"]] == ["D2", "D3", "D4", "D5", "D6", "D7"]
    assert "trainable_modules=all trains full weights" in tiny["deviations"][0]
    real = deviations(make(["method=ga_diff", "model=llava7b", "method.optim.schedule=constant",
                            "method.loss_scope=full"]))
    assert [d.split(":")[0] for d in real["deviations"]] == ["D5", "D7"]  # LoRA, no clipping
    official = deviations(make(["method=mmunlearner", "method.schedule=official"]))
    assert [d.split(":")[0] for d in official["deviations"]] == ["D5", "D6"]
    assert deviations(make(["method=none"])) == {"doc": "docs/fidelity.md", "deviations": []}


def test_the_vkd_experiment_sweeps_the_four_methods_with_the_relearning_attack():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=vkd"], return_hydra_config=True)
    assert cfg.eval.attack == "relearn"
    assert cfg.hydra.sweeper.params == {"method": "vkd,ga_diff,mmunlearner,vgid"}
    validate(cfg)
