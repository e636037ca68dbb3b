"""Fisher-ratio saliency masks (MMUnlearner, methods.md §1.1) and the masked forget gradient.

Saliency S(θ0, D) is the diagonal empirical Fisher at batch level: the mean over D's batches
of the squared batch-mean NLL gradient, accumulated in fp32 (the official code accumulates in
fp16, where ε = 1e-15 and small squares underflow). The mask is
m = 1[(S_T + ε) / (S_P + ε) ≥ β], one bool per trainable element, keyed by parameter name.

Masks cover exactly the parameters with ``requires_grad`` (full weights of a scope, or LoRA
adapters), and :func:`check_aligned` fails loudly when they stop matching the trainable set
(the official LLaVA/LoRA path silently applied no mask at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch.func import functional_call

from unlearn.methods.losses import model_inputs, reduce_nll, token_logprobs

Masks = dict[str, torch.Tensor]


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters with ``requires_grad`` by name (tied weights appear once)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def check_aligned(masks: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``masks`` and ``params`` have the same names and shapes."""
    missing, extra = sorted(set(params) - set(masks)), sorted(set(masks) - set(params))
    shapes = [n for n in set(params) & set(masks) if masks[n].shape != params[n].shape]
    if missing or extra or shapes:
        raise ValueError(
            "saliency mask does not match the trainable parameters: "
            f"{len(missing)} trainable without mask (e.g. {missing[:3]}), "
            f"{len(extra)} masked but not trainable (e.g. {extra[:3]}), "
            f"{len(shapes)} shape mismatches (e.g. {sorted(shapes)[:3]}); "
            "the mask must be computed on the same model and trainable_modules scope"
        )


@contextmanager
def float32(model: torch.nn.Module) -> Iterator[None]:
    """Run in fp32, then restore every parameter's and buffer's dtype (an exact round trip
    from fp16/bf16); keeps tensor identities, so optimiser references stay valid."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    if all(d == torch.float32 for d in dtypes):
        yield
        return
    for t in tensors:
        t.data = t.data.float()
    try:
        yield
    finally:
        for t, dtype in zip(tensors, dtypes, strict=True):
            t.data = t.data.to(dtype)


def _to(batch: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype
        ) -> dict[str, torch.Tensor]:
    """Batch on the model's device, floating tensors (pixels) in the model's dtype."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
            for k, v in batch.items()}


def fisher_diag(model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                params: Mapping[str, torch.nn.Parameter] | None = None) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of the squared gradient of the token-mean NLL, in fp32.

    Computed in eval mode (no dropout: the mask is a function of θ0 and the data alone) and
    with the model cast to fp32 for the duration; ``params`` default to the trainable ones.
    Parameters a batch does not reach (vision weights on a text-only batch) count as zero
    gradient: the batch still counts in the mean.
    """
    training = model.training
    model.eval()
    with float32(model):
        params = dict(params if params is not None else trainable(model))
        if not params:
            raise ValueError("no trainable parameters to compute a saliency mask over")
        acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        first = next(iter(params.values()))
        count = 0
        for batch in batches:
            batch = _to(batch, first.device, first.dtype)
            logp, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
            loss = reduce_nll(logp, mask, "token_mean")
            count += 1
            if not loss.requires_grad:  # e.g. text-only batch, vision scope: zero gradient
                continue
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for a, g in zip(acc.values(), grads, strict=True):
                if g is not None:
                    a.add_(g.float().square())
    model.train(training)
    if count == 0:
        raise ValueError("saliency needs at least one batch")
    return {n: a / count for n, a in acc.items()}


def ratio_mask(s_target: Mapping[str, torch.Tensor], s_preserve: Mapping[str, torch.Tensor],
               beta: float = 1.0, eps: float = 1e-15) -> Masks:
    """m = 1[(S_T + ε) / (S_P + ε) ≥ β] per element, in fp32; a tie at β is selected."""
    if set(s_target) != set(s_preserve):
        raise ValueError("target and preserve saliencies cover different parameters")
    if beta <= 0 or eps < 0:
        raise ValueError(f"need beta > 0 and eps >= 0, got beta={beta}, eps={eps}")
    return {n: ((s_target[n].float() + eps) / (s_preserve[n].float() + eps) >= beta).cpu()
            for n in s_target}


def masked_params(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """Aliases of the trainable parameters whose gradient is multiplied by the mask.

    A forward through :func:`masked_forward` with these sends ``m ⊙ ∇`` to the parameters,
    while any other forward in the same graph (the retain loss) reaches them unmasked, so one
    backward of ``-L_f(masked) + L_r`` yields exactly ``m ⊙ ∇(-L_f) + ∇L_r``.
    """
    params = trainable(model)
    check_aligned(masks, params)
    aliases = {}
    for name, p in params.items():
        m = masks[name]
        alias = p.view_as(p)
        alias.register_hook(lambda g, m=m: g * m)
        aliases[name] = alias
    return aliases


def masked_forward(model: torch.nn.Module, masks: Mapping[str, torch.Tensor],
                   batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` with mask-filtered gradients (values unchanged)."""
    aliases = masked_params(model, masks)
    return functional_call(model, aliases, args=(), kwargs=model_inputs(batch),
                           tie_weights=True, strict=False).logits
