"""One job of ``mdlbench-train``: a composed config read into the typed schema of its code family.

Every experiment is one of four families, told apart by the section its composed config carries:

* no family section: the prequential byte code (:class:`mdlbench.config.Config`, ``mdlbench.train``);
* ``supervised:`` the MDL code family on labels (:class:`~mdlbench.codes.supervised.config.SupervisedConfig`);
* ``bits_back:`` BB-ANS or bits-back coded weights (:class:`~mdlbench.codes.bits_back.config.BitsBackConfig`);
* ``capacity:`` the knowledge-capacity sweep (:class:`~mdlbench.capacity.config.CapacityConfig`).

:func:`from_dict` builds a :class:`Job` (the top-level :class:`Config` plus at most one family
config: a tagged union, each member fully typed and validated) and :func:`run` hands it to its
family's driver. Nothing here imports JAX: a job pins its thread count first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

from mdlbench import config as config_lib
from mdlbench.config import Config, ConfigError

if TYPE_CHECKING:
    from mdlbench.capacity.config import CapacityConfig
    from mdlbench.codes.bits_back.config import BitsBackConfig
    from mdlbench.codes.supervised.config import SupervisedConfig

FamilyConfig = Union["SupervisedConfig", "BitsBackConfig", "CapacityConfig"]

FAMILY_SECTIONS = ("supervised", "bits_back", "capacity")


def _family_reader(section: str) -> Callable[[dict[str, Any]], Any]:
    # The config modules are jax-free; imported here so the byte code never loads the others' schemas.
    if section == "supervised":
        from mdlbench.codes.supervised.config import from_dict
    elif section == "bits_back":
        from mdlbench.codes.bits_back.config import from_dict
    else:
        from mdlbench.capacity.config import from_dict
    return from_dict


@dataclass
class Job:
    """What one ``mdlbench-train`` invocation runs.

    Attributes:
      config: the top-level config. For the byte code it is the whole program; for the other
        families only ``experiment``, ``threads`` and ``run_dir`` matter.
      family: the family's own typed config, or None for the prequential byte code.
    """

    config: Config
    family: FamilyConfig | None = None


def from_dict(d: dict[str, Any]) -> Job:
    """Builds a validated :class:`Job` from a composed, resolved config.

    Raises:
      ConfigError: two family sections in one config, or any invalid value (one line).
    """
    sections = [s for s in FAMILY_SECTIONS if d.get(s) is not None]
    if len(sections) > 1:
        raise ConfigError(f"one job runs one code family, but the config has sections {' and '.join(sections)}")
    top = {k: v for k, v in d.items() if k not in FAMILY_SECTIONS}
    config = config_lib.from_dict(top)
    if not sections:
        return Job(config)
    section = sections[0]
    value = d[section]
    if not isinstance(value, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(value).__name__}")
    return Job(config, _family_reader(section)(value))


def compose(overrides: list[str]) -> Job:
    """Composes ``conf/`` exactly as ``mdlbench-train`` would and returns the typed job (Hydra stays at
    this boundary: ``mdlbench compress``, ``mdlbench bench`` and the tests compose here).

    Raises:
      ConfigError: the overrides do not compose, or the composed config is invalid (one line).
    """
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mdlbench.cli import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            d = OmegaConf.to_container(hydra_compose("config", overrides=overrides), resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot compose the config: {str(e).splitlines()[0]}") from None
    d.pop("hydra", None)
    return from_dict(d)


def byte_code(job: Job, who: str) -> Config:
    """The job's :class:`Config`, refusing a job of another family (``who`` names the command)."""
    if job.family is not None:
        raise ConfigError(f"{who} runs the prequential byte code; this config is a "
                          f"{type(job.family).__name__} job (run it with mdlbench-train)")
    return job.config


def with_run_dir(job: Job, run_dir: str) -> Job:
    """The same job with its top-level ``run_dir`` set (Hydra's output directory)."""
    return dataclasses.replace(job, config=dataclasses.replace(job.config, run_dir=run_dir))


def run(job: Job, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Runs the job with its family's driver and returns that driver's summary.

    The thread count is pinned before any driver imports JAX (the byte code's decoder reproduces
    the count recorded in its container; the other families record theirs).
    """
    from mdlbench import train
    from mdlbench.capacity.config import CapacityConfig
    from mdlbench.codes.bits_back.config import BitsBackConfig
    from mdlbench.codes.supervised.config import SupervisedConfig

    family = job.family
    if family is None:
        return train.run(job.config)
    train.pin_threads(job.config.threads)
    if isinstance(family, SupervisedConfig):
        from mdlbench.codes.supervised import run_codes

        return run_codes(family)
    if isinstance(family, BitsBackConfig):
        from mdlbench.codes.bits_back import run_bits_back

        return run_bits_back(family, job.config.run_dir or None)
    if isinstance(family, CapacityConfig):
        from mdlbench import capacity

        return capacity.run(family, job.config.experiment, log)
    raise ConfigError(f"no driver for a {type(family).__name__}")
