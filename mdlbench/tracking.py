"""Optional wandb tracking on top of the always-written JSON-lines metrics."""

from __future__ import annotations

from typing import Any

from mdlbench import config as config_lib
from mdlbench.config import Config


class WandbTracker:
    """One wandb run per job: group = experiment, name = ``<model>-<data>-s<seed>``."""

    def __init__(self, cfg: Config):
        import wandb

        self._wandb = wandb
        # Quiet on the terminal (no banner, no run summary, no captured console): the run's files
        # are still written under the run directory, and mdlbench's own bar and table say the rest.
        quiet = wandb.Settings(silent=True, quiet=True, console="off")
        self.run = wandb.init(project=cfg.logger.project, mode=cfg.logger.wandb_mode, group=cfg.experiment,
                              name=f"{cfg.model.name}-{cfg.data.name}-s{cfg.seed}", dir=cfg.run_dir or None,
                              config=config_lib.to_dict(cfg), reinit="finish_previous", settings=quiet)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, summary: dict[str, Any]) -> None:
        for k, v in _flatten(summary).items():
            if isinstance(v, (int, float, str, bool)):
                self.run.summary[k] = v

    def finish(self) -> None:
        self.run.finish()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
