"""alignkit: generate -> rate -> pairs -> reward -> DPO/RL -> rate again, on one PEFT-adapted base model.

The Python API mirrors the CLI: each stage takes an optional YAML config, `key=value` overrides and keyword sections,
and returns a `Run` with `.path`, `.metrics` and `.load_model()`.

    run = alignkit.sft(data={"paths": ["datasets/sft.jsonl"]}, trainer={"max_steps": 20})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alignkit.errors import AlignkitError

if TYPE_CHECKING:
    from alignkit.runs import Run

__version__ = "0.1.0"
__all__ = ["AlignkitError", "dpo", "pretrain", "reward", "rl", "sft"]


def sft(config: str | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Supervised fine-tuning (see `alignkit.stages.sft`)."""
    from alignkit.config import SFTStageConfig, load_config
    from alignkit.stages import sft as stage

    return stage.run(load_config(SFTStageConfig, config, sections, overrides))


def pretrain(config: str | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Continued pretraining on raw text (see `alignkit.stages.pretrain`)."""
    from alignkit.config import PretrainStageConfig, load_config
    from alignkit.stages import pretrain as stage

    return stage.run(load_config(PretrainStageConfig, config, sections, overrides))


def reward(config: str | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Reward model from preference pairs (see `alignkit.stages.reward`; score with `reward.load_scorer`)."""
    from alignkit.config import RewardStageConfig, load_config
    from alignkit.stages import reward as stage

    return stage.run(load_config(RewardStageConfig, config, sections, overrides))


def dpo(config: str | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """DPO (and KTO, SimPO, ORPO) on top of an SFT run (see `alignkit.stages.dpo`)."""
    from alignkit.config import DPOStageConfig, load_config
    from alignkit.stages import dpo as stage

    return stage.run(load_config(DPOStageConfig, config, sections, overrides))


def rl(config: str | None = None, overrides: list[str] | None = None, **sections: Any) -> Run:
    """Online RL (GRPO, RLOO) of a policy run against a reward model and/or rules (see `alignkit.stages.rl`)."""
    from alignkit.config import RLStageConfig, load_config
    from alignkit.stages import rl as stage

    return stage.run(load_config(RLStageConfig, config, sections, overrides))
