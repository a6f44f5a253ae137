"""train_opt's search configuration is core's typed :class:`~core.search.SearchConfig` over the
discovered hyperparameters; Level 1.5 changes it only through a validated :class:`~core.search.ConfigPatch`."""

from core.search import GUIDANCE_MAX_CHARS, ConfigPatch, SearchConfig, Strategy, apply_patch, initial_config

__all__ = ["GUIDANCE_MAX_CHARS", "ConfigPatch", "SearchConfig", "Strategy", "apply_patch", "initial_config"]
