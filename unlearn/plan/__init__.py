"""Per-GPU memory of a training step from the config alone (``python -m unlearn.plan``).

The model is built on the ``meta`` device from its config (``model.arch.config`` for a hub
checkpoint, :func:`unlearn.models.tiny.tiny_config` for a tiny model): parameter counts and
dtypes are exact, nothing is downloaded or allocated. The trainable scope is applied by the
same code as training (:func:`unlearn.models.lora.prepare_trainable`), so counts under
``trainable_modules`` (LoRA included) are exact too.

Per GPU, in bytes (p = a parameter's element size, P = all parameters, W = trainable ones;
FSDP divides the first five by the device count):

* weights: sum of p over P, plus buffers;
* reference: a frozen copy of the weights when the objective compares against the
  pre-unlearning model and the student has no LoRA adapters (with LoRA the reference is the
  student with adapters disabled: nothing), VKD's snapshot of W;
* saliency mask (MMUnlearner, VKD with ``saliency``): 1 byte per element of W;
* gradients: sum of p over W (in the parameter's dtype);
* optimizer states: 2 x sum of p over W (torch AdamW keeps ``exp_avg``/``exp_avg_sq`` in the
  parameter's dtype); its step adds 1 x that for ``sqrt(exp_avg_sq)`` (foreach implementation);
* DDP gradient buckets: 1 x the gradients; FSDP working set: the root unit (embeddings, head,
  projector, norms) plus two decoder/vision layers gathered unsharded, plus one layer's
  unsharded gradients;
* activations: see :func:`saved_per_graph`; the peak is the larger of (activations saved by
  the step's graphs + the backward's start: logit gradients, the head's gradient, one MLP's
  gradient buffers) and (gradients + the optimizer's temporary).

peak = weights + reference + mask + optimizer states + buckets/working set
       + max(activations + backward transient, gradients + optimizer temporary)

Counted: every tensor the step allocates, as :class:`unlearn.bench.memory.TensorMemory`
counts them on CPU (tests/test_plan.py checks the ratio on the tiny models). Not counted:
the CUDA context, NCCL buffers and the caching allocator's fragmentation (``plan.reserve_gb``
stands for them), kernels' workspaces, data-loader memory, evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from unlearn.errors import UserError
from unlearn.models.families import MODEL_CLASSES
from unlearn.models.lora import prepare_trainable
from unlearn.models.modules import decoder_layers, vision_layers
from unlearn.models.tiny import tiny_config

GIB = 2 ** 30
STRATEGIES: tuple[str, ...] = ("single", "ddp", "fsdp")
GRAPH_KINDS: tuple[str, ...] = ("nll", "nll_full", "kl", "hidden", "vision")
CONFIG_CLASSES = {family: cls.config_class for family, cls in MODEL_CLASSES.items()}
HALF = {"bf16-true": torch.bfloat16, "16-true": torch.float16}  # Lightning converts the model
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PlanError(UserError, ValueError):
    """A planner input outside its allowed values."""


@dataclass(frozen=True)
class Profile:
    """What one step of an objective runs beyond the trainable model.

    ``graphs``: the forward passes with gradient alive together before the backward, by how
    their logits are used: ``nll`` (log-softmax at the labelled positions only), ``nll_full``
    (logits at every position, then the labelled ones), ``kl`` (every position, then a
    full-vocabulary KL at the labelled ones), ``hidden`` (a hidden state, no logits),
    ``vision`` (vision tower and projector only). ``reference``: a frozen pre-unlearning model;
    ``teacher_view``: the forget batch also runs without gradient on a longer teacher prompt;
    ``mask``: a saliency mask per trainable element; ``snapshot``: a copy of the trainable
    parameters. ``alive_at_reference``: how many of the graphs exist when the reference's
    largest logits pass runs (None: all of them). ``depth``: decoder layers a graph keeps
    (RMU reads layer l's output and drops the logits: layers after l are freed at once).
    """

    graphs: tuple[str, ...]
    reference: bool = False
    teacher_view: bool = False
    mask: bool = False
    snapshot: bool = False
    alive_at_reference: int | None = None
    depth: int | None = None


def profile(method: DictConfig) -> Profile:
    """The :class:`Profile` of ``method.objective`` (read from its code: unlearn/methods)."""
    objective = method.get("objective")
    if objective is None:
        raise PlanError(f"method={method.name!r} does not train: nothing to plan")
    name = str(objective["_target_"]).rsplit(".", 1)[-1]
    retain = float(objective.get("retain_weight", 0.0) or 0.0) > 0
    profiles = {
        "GradientAscent": Profile(("nll",)),
        "GradientDifference": Profile(("nll", "nll")),
        "KLMinimization": Profile(("nll", "kl"), reference=True),
        "NegativePreferenceOptimization": Profile(("nll",) * (1 + retain), reference=True),
        "PreferenceOptimization": Profile(("nll",) * (2 + retain), reference=True,
                                          alive_at_reference=0),
        "RMU": Profile(("hidden", "hidden"), reference=True,
                       depth=int(objective.get("layer", 0)) + 1),
        "Distillation": Profile(("kl", "kl"), reference=True, teacher_view=True,
                                alive_at_reference=1),
        "MMUnlearner": Profile(("nll_full", "nll"), mask=True),
        "VKD": Profile(("vision", "vision") + (("kl",) if objective.get("output_weight") else ()),
                       mask=bool(objective.get("saliency")), snapshot=True),
    }
    if name not in profiles:
        raise PlanError(f"method.objective._target_={objective['_target_']!r}: the planner "
                        f"knows {sorted(profiles)}; add its Profile in unlearn/plan")
    return profiles[name]


# ---- the model


def meta_model(model_cfg: DictConfig) -> torch.nn.Module:
    """The model of ``model_cfg`` on the meta device, in its configured dtype."""
    family = model_cfg.family
    if family not in CONFIG_CLASSES:
        raise PlanError(f"model.family={family!r} is not one of {list(CONFIG_CLASSES)}")
    if model_cfg.source == "tiny":
        tiny = model_cfg.get("tiny") or {}
        config = tiny_config(family, tiny.get("size", "tiny"), tiny.get("image_size"))
    else:
        arch = OmegaConf.select(model_cfg, "arch.config")
        if arch is None:
            raise PlanError(f"model={model_cfg.name}: no model.arch.config; the planner builds "
                            "the model from it (copy the checkpoint's config.json values, as "
                            "conf/model/llava7b.yaml does)")
        config = CONFIG_CLASSES[family](**OmegaConf.to_container(arch, resolve=True))
    with torch.device("meta"):
        model = MODEL_CLASSES[family](config)
    return model.to(DTYPES[model_cfg.get("dtype", "float32")])


@dataclass(frozen=True)
class Dims:
    """The widths and depths the activation formulas need, read from the model's config."""

    hidden: int
    inter: int
    layers: int
    heads: int
    kv: int            # key/value width: kv heads x head dim
    vocab: int
    v_hidden: int
    v_inter: int
    v_layers: int
    v_positions: int   # vision-tower positions per image
    image_tokens: int  # language-model positions per image
    v_kind: str        # clip | qwen2_vl | qwen2_5_vl
    pixels: int        # input values per image (pixel_values)

    @classmethod
    def of(cls, model: torch.nn.Module, model_cfg: DictConfig) -> Dims:
        config = model.config
        text, vision = config.text_config, config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        common = dict(hidden=text.hidden_size, inter=text.intermediate_size,
                      layers=text.num_hidden_layers, heads=text.num_attention_heads,
                      kv=text.num_key_value_heads * head_dim, vocab=text.vocab_size)
        if model_cfg.family == "llava":
            side = vision.image_size // vision.patch_size
            return cls(**common, v_hidden=vision.hidden_size, v_inter=vision.intermediate_size,
                       v_layers=vision.num_hidden_layers, v_positions=side * side + 1,
                       image_tokens=config.image_seq_length, v_kind="clip",
                       pixels=3 * vision.image_size ** 2)
        size = OmegaConf.select(model_cfg, "arch.image_size") or OmegaConf.select(
            model_cfg, "tiny.image_size")
        if not size or size % (vision.patch_size * vision.spatial_merge_size):
            raise PlanError(f"model={model_cfg.name}: model.arch.image_size={size!r} must be a "
                            "multiple of 28 (Qwen's image side in pixels)")
        positions = (size // vision.patch_size) ** 2
        if model_cfg.family == "qwen2_vl":
            width, inter = vision.embed_dim, vision.embed_dim * vision.mlp_ratio
        else:
            width, inter = vision.hidden_size, vision.intermediate_size
        return cls(**common, v_hidden=width, v_inter=inter, v_layers=vision.depth,
                   v_positions=positions, image_tokens=positions // vision.spatial_merge_size ** 2,
                   v_kind=model_cfg.family,
                   pixels=positions * 3 * vision.temporal_patch_size * vision.patch_size ** 2)


def nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ---- the run's setup


def strategy_of(cfg: DictConfig) -> tuple[str, int]:
    """(single | ddp | fsdp, devices) from ``plan.strategy`` or ``trainer.strategy``."""
    devices = cfg.trainer.get("devices", 1)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise PlanError(f"trainer.devices={devices!r} must be an integer >= 1 (the planner "
                        "cannot count visible GPUs: say how many, e.g. trainer.devices=4)")
    chosen = OmegaConf.select(cfg, "plan.strategy")
    if chosen is not None:
        if chosen not in STRATEGIES:
            raise PlanError(f"plan.strategy={chosen!r} is not one of {list(STRATEGIES)}")
        if chosen == "single" and devices != 1:
            raise PlanError(f"plan.strategy=single with trainer.devices={devices}: "
                            "use ddp or fsdp")
        return chosen, devices
    strategy = cfg.trainer.get("strategy", "auto")
    name = str(strategy.get("_target_", "") if isinstance(strategy, Mapping) else strategy)
    lower = name.lower()
    if "fsdp" in lower:
        return "fsdp", devices
    if "ddp" in lower or (lower in ("auto", "") and devices > 1):
        return "ddp", devices
    if lower in ("auto", "single_device", ""):
        return "single", devices
    raise PlanError(f"trainer.strategy={name!r}: the planner knows DDP, FSDP and one device; "
                    f"set plan.strategy to one of {list(STRATEGIES)}")


def act_bytes(model: torch.nn.Module, precision: str) -> int:
    """Element size of activations: half under bf16/fp16 (mixed or true) or half weights."""
    half = any(precision.startswith(p) for p in ("bf16", "16")) or model.dtype in (
        torch.bfloat16, torch.float16)
    return 2 if half else 4


# ---- activations


@dataclass(frozen=True)
class Step:
    """One step's shapes per GPU: batch, positions per sample, and what trains."""

    batch: int
    text_tokens: int
    answer_tokens: int
    instruction_tokens: int
    act: int                     # activation element size
    checkpointing: bool
    trained: frozenset[str]      # groups with trainable parameters (vision, projector, ...)
    lora: float = 0.0            # bytes per position one decoder layer's adapters keep


def lm_layer_bytes(d: Dims, s: Step) -> float:
    """Bytes one decoder layer saves per position (Llama / Qwen2 layers, SDPA attention).

    ``full`` = 1 when the decoder's own weights train (0 under LoRA: a frozen linear keeps
    no input). Each of the two RMSNorms keeps its input in fp32 (4h: the residual itself in
    fp32, an upcast copy in half), its normalised value when its weight trains and its output
    when the next linear trains (a*h each); SDPA keeps q, k and v (k and v repeated to every
    head under a padding mask) and its output (4*a*h) and a log-sum-exp per head; the MLP keeps
    gate, SiLU and up (3*a*i) and the product when down_proj trains:
        8h + 4*a*h*full + 4*a*h + 4*heads + 3*a*i + a*i*full.
    LoRA adds :func:`lora_layer_bytes`.
    """
    a, h, full = s.act, d.hidden, int("language" in s.trained)
    norms = 2 * (4 * h + 2 * a * h * full)
    attention = 4 * a * h + 4 * d.heads
    mlp = 3 * a * d.inter + a * d.inter * full
    return norms + attention + mlp + s.lora


def vision_layer_bytes(d: Dims, s: Step) -> float:
    """Bytes one vision layer saves per position when the tower trains: two LayerNorms'
    inputs and outputs (4h), q/k/v and the attention output (4h; Qwen2-VL keeps its fused
    qkv output and the rotated q and k: 6h), and the QuickGELU MLP (fc1, sigmoid, product:
    3i); Qwen2.5-VL's blocks are RMSNorm + SwiGLU like a decoder layer."""
    a, h = s.act, d.v_hidden
    if d.v_kind == "qwen2_5_vl":
        return 2 * (4 * h + 2 * a * h) + 4 * a * h + 4 * a * d.v_inter
    attention = 6 * h if d.v_kind == "qwen2_vl" else 4 * h
    return a * (4 * h + attention + 3 * d.v_inter)


def saved_per_graph(d: Dims, s: Step, kind: str, depth: int | None = None) -> float:
    """Activation bytes one forward pass with gradient keeps for its backward.

    Language model (when anything trains): B * T * (L * layer + final norm) + L * B * T^2 * a
    (each layer's attention mask), T = text positions + image tokens, layer =
    :func:`lm_layer_bytes`; ``depth`` < L when the graph stops at a layer (RMU). With gradient
    checkpointing each layer keeps only its input (a*h per position). The vision tower
    (:func:`vision_layer_bytes` per layer and position) and the projector keep activations
    only when something in or before them trains. Logits: the fp32 log-softmax at the
    N = B * answer positions (4 * N * V); a KL keeps three such tensors (both log-softmaxes'
    factors and p_T).
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"graph kind {kind!r} is not one of {list(GRAPH_KINDS)}")
    a, b = s.act, s.batch
    positions = b * d.v_positions
    vision = "vision" in s.trained
    total = 0.0
    if vision:
        layer = a * d.v_hidden if s.checkpointing else vision_layer_bytes(d, s)
        total += positions * (d.v_layers * layer + 2 * a * d.v_hidden)
    if vision or "projector" in s.trained:
        # LLaVA: the MLP's input (kept here when the tower is frozen), hidden and GELU output;
        # Qwen's merger: LayerNorm output, fc1 and GELU outputs per ViT position
        if d.v_kind == "clip":
            total += b * d.image_tokens * a * (2 * d.hidden + d.v_hidden * (not vision))
        else:
            total += positions * a * d.v_hidden * (3 + (not vision))
    if kind == "vision":
        return total
    t = s.text_tokens + d.image_tokens
    layers = d.layers if depth is None else min(depth, d.layers)
    layer = a * d.hidden if s.checkpointing else lm_layer_bytes(d, s)
    mask = 0 if s.checkpointing else layers * b * t * t * a
    final_norm = 4 * d.hidden + a * d.hidden * ("language" in s.trained)
    total += b * t * (layers * layer + final_norm * (depth is None)) + mask
    n = b * s.answer_tokens
    return total + {"nll": 1, "nll_full": 1, "kl": 3, "hidden": 0}[kind] * 4 * n * d.vocab


def transient(d: Dims, s: Step, kind: str, head_grad: int) -> float:
    """Bytes alive at the start of a graph's backward beyond what it saved: the logits'
    gradient (log-softmax and selection at N positions in fp32, the logits at the positions
    the head computed), the head's weight gradient, one MLP's gradient buffers (2 x B*T*i*a)
    and, with checkpointing, one layer's recomputed activations."""
    if kind == "vision":
        return 2 * s.batch * d.v_positions * d.v_inter * s.act
    t = s.text_tokens + d.image_tokens
    n, a = s.batch * s.answer_tokens, s.act
    logits = {"nll": 2 * 4 * n * d.vocab + a * n * d.vocab,
              "nll_full": 2 * 4 * n * d.vocab + a * s.batch * t * d.vocab,
              "kl": 3 * 4 * n * d.vocab + a * s.batch * t * d.vocab,
              "hidden": 0}[kind]
    recompute = s.batch * t * lm_layer_bytes(d, s) if s.checkpointing else 0
    return logits + head_grad + 2 * s.batch * t * d.inter * a + recompute


def teacher_pass(d: Dims, s: Step, extra_tokens: int) -> float:
    """A no-gradient forward of the reference: its logits at every position, the selected
    fp32 rows and their log-softmax, and one MLP's buffers (3 x B*T*i*a). ``extra_tokens``:
    Vgid's teacher prompt is longer by the instruction."""
    t = s.text_tokens + extra_tokens + d.image_tokens
    return (s.act * s.batch * t * d.vocab + 2 * 4 * s.batch * s.answer_tokens * d.vocab
            + 3 * s.batch * t * d.inter * s.act)


# ---- the plan


@dataclass(frozen=True)
class Row:
    """A component: bytes per GPU, whether the peak holds it, what it is."""

    name: str
    bytes: float
    in_peak: bool
    note: str


@dataclass
class Plan:
    """Per-GPU bytes by component, the peak and whether it fits ``plan.gpu_gb``."""

    title: str
    strategy: str
    devices: int
    params: int
    trainable: int
    rows: list[Row] = field(default_factory=list)
    peak: float = 0.0          # tensors
    phase: str = ""            # when the peak happens
    reserve: float = 0.0
    gpu: float = 0.0

    @property
    def total(self) -> float:
        return self.peak + self.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu


def lora_layer_bytes(d: Dims, trainable_cfg: DictConfig, adapter: int, act: int,
                     autocast: bool, cpu: bool) -> float:
    """Bytes per position the LoRA adapters of one decoder layer keep.

    peft casts each adapted linear's input to the adapters' dtype (``adapter`` bytes: fp32
    next to half weights), drops it out and feeds ``lora_A``. Per input width: the dropout's
    record (a bool mask on GPU; on CPU a noise tensor in the adapters' dtype) and lora_A's
    input (its autocast copy in ``act`` bytes under a mixed precision, else the dropout
    output itself); per adapter the rank-r intermediate lora_B keeps.
    """
    if trainable_cfg.scope != "lora":
        return 0.0
    widths = {"q_proj": d.hidden, "k_proj": d.hidden, "v_proj": d.hidden, "o_proj": d.hidden,
              "gate_proj": d.hidden, "up_proj": d.hidden, "down_proj": d.inter}
    targets = list(trainable_cfg.lora.target_modules)
    inputs = sum(widths.get(t, d.hidden) for t in targets)
    dropout = (adapter if cpu else 1) if float(trainable_cfg.lora.dropout) > 0 else 0
    kept = act if autocast else adapter
    return (dropout + kept) * inputs + kept * int(trainable_cfg.lora.r) * len(targets)


def check_plan(node: DictConfig) -> None:
    """``plan.*`` values in range, each error naming its key."""
    minimum = {"gpu_gb": (float, 0, ">"), "reserve_gb": (float, 0, ">="),
               "text_tokens": (int, 1, ">="), "answer_tokens": (int, 0, ">="),
               "instruction_tokens": (int, 0, ">=")}
    for key, (kind, bound, op) in minimum.items():
        value = node.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool) and (
            kind is float or isinstance(value, int))
        if not number or (value <= bound if op == ">" else value < bound):
            what = "a number" if kind is float else "an integer"
            raise PlanError(f"plan.{key}={value!r} must be {what} {op} {bound}")


def plan(cfg: DictConfig) -> Plan:
    """The per-GPU memory plan of ``cfg`` (a composed root config with a ``plan`` node)."""
    strategy, devices = strategy_of(cfg)
    check_plan(cfg.plan)
    method = cfg.method
    prof = profile(method)
    precision = str(cfg.trainer.get("precision", "32-true"))

    model = meta_model(cfg.model)
    d = Dims.of(model, cfg.model)
    model, counts = prepare_trainable(model, cfg.trainable_modules)
    if precision in HALF:
        model = model.to(HALF[precision])
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights = nbytes(params) + nbytes(model.buffers())
    grads = nbytes(trainable)
    lora = cfg.trainable_modules.scope == "lora"
    finetuned_ref = OmegaConf.select(method, "reference.source") == "retain_finetuned"
    base = weights - (grads if lora else 0)  # the base model without adapters
    reference = base if prof.reference and (not lora or finetuned_ref) else 0
    reference += grads if prof.snapshot else 0
    mask = sum(p.numel() for p in trainable) if prof.mask else 0

    trained = frozenset(g for g, c in counts["by_group"].items() if c["trainable"])
    adapter = min((p.element_size() for p in trainable), default=4)
    act = act_bytes(model, precision)
    autocast = precision.endswith("mixed") and act < 4
    cpu = cfg.trainer.get("accelerator") == "cpu"
    step = Step(batch=int(method.batch_size), text_tokens=int(cfg.plan.text_tokens),
                answer_tokens=int(cfg.plan.answer_tokens),
                instruction_tokens=int(cfg.plan.instruction_tokens), act=act,
                checkpointing=bool(method.get("gradient_checkpointing", False)),
                trained=trained,
                lora=lora_layer_bytes(d, cfg.trainable_modules, adapter, act, autocast, cpu))
    per_term = bool(method.get("backward_per_term", False))
    saved = [saved_per_graph(d, step, k, prof.depth) for k in prof.graphs]
    head = model.get_output_embeddings()
    head_grad = nbytes([head.weight]) if head is not None and head.weight.requires_grad else 0
    back = max(transient(d, step, k, head_grad) for k in prof.graphs)
    logits_ref = prof.reference and set(prof.graphs) != {"hidden"}
    teacher = teacher_pass(d, step, step.instruction_tokens * prof.teacher_view) \
        if logits_ref else 0
    activations = max(saved) if per_term else sum(saved)
    alive = saved[:prof.alive_at_reference] if prof.alive_at_reference is not None else saved
    at_reference = max(alive, default=0) if per_term else sum(alive)
    # input_ids, labels, attention_mask (int64) and pixel_values (fp32) of each graph's batch
    batch_inputs = step.batch * len(prof.graphs) * (
        3 * 8 * (step.text_tokens + d.image_tokens) + 4 * d.pixels)

    shard = devices if strategy == "fsdp" else 1
    states = 2 * grads
    setup, setup_note = 0.0, ""
    if strategy == "ddp":
        setup, setup_note = grads, "DDP gradient buckets (1 x gradients)"
    elif strategy == "fsdp":
        layers = [*decoder_layers(model), *vision_layers(model)]
        largest = max(nbytes(layer.parameters()) for layer in layers)
        root = nbytes(params) - sum(nbytes(layer.parameters()) for layer in layers)
        largest_grad = max(nbytes(p for p in layer.parameters() if p.requires_grad)
                           for layer in layers)
        setup = root + 2 * largest + largest_grad
        setup_note = "FSDP unsharded: root unit + 2 layers gathered + 1 layer's gradients"
    static = (weights + reference + mask + states) / shard + setup
    backward_phase = batch_inputs + max(activations + back, at_reference + teacher)
    optimizer_phase = (grads + grads) / shard
    peak = static + max(backward_phase, optimizer_phase)

    title = (f"{cfg.model.name} · {method.name} · trainable_modules="
             f"{cfg.trainable_modules.scope} · {strategy} x {devices} · {precision}")
    out = Plan(title, strategy, devices, sum(p.numel() for p in params),
               sum(p.numel() for p in trainable), peak=peak,
               reserve=float(cfg.plan.reserve_gb) * GIB, gpu=float(cfg.plan.gpu_gb) * GIB)
    sharded = f" / {shard}" if shard > 1 else ""
    graphs = " + ".join(prof.graphs) + (" (one at a time)" if per_term else "")
    t = step.text_tokens + d.image_tokens
    at_optimizer = optimizer_phase > backward_phase
    out.phase = "the optimizer step" if at_optimizer else "the backward's start"
    out.rows = [
        Row("weights", weights / shard, True, f"{out.params:,} parameters{sharded}"),
        Row("optimizer states", states / shard, True, f"AdamW exp_avg + exp_avg_sq{sharded}"),
        Row("reference / teacher", reference / shard, True,
            "frozen copy" if reference and not prof.snapshot else
            "snapshot of the trainable weights" if reference else
            "adapters disabled: no copy" if prof.reference else "none"),
        Row("saliency mask", mask / shard, True,
            "1 byte per trainable element" if mask else "none"),
        Row("strategy", setup, True, setup_note or "none"),
        Row("gradients", grads / shard, at_optimizer,
            f"{out.trainable:,} trainable{sharded}; complete after the backward"),
        Row("AdamW step temporary", grads / shard, at_optimizer, "sqrt(exp_avg_sq)"),
        Row("activations", activations + batch_inputs, not at_optimizer,
            f"batch {step.batch} x {t} positions ({step.text_tokens} text + {d.image_tokens} "
            f"image), {graphs}" + (", checkpointed" if step.checkpointing else "")),
        Row("transient", backward_phase - activations - batch_inputs, not at_optimizer,
            "backward's start: logit gradients, head gradient, MLP buffers"
            if activations + back >= at_reference + teacher
            else "reference / teacher forward: its logits at every position"),
    ]
    return out
