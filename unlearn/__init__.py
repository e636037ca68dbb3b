"""unlearn: machine unlearning for multimodal LLMs (Hydra + PyTorch Lightning)."""

from unlearn import resolvers as _resolvers  # noqa: F401  (registers ${scaled:…} before compose)
