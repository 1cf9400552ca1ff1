"""Command-line entry points.

``mdlbench-train`` is the Hydra app: it composes ``conf/`` and runs the typed job
(:mod:`mdlbench.jobs`: the byte code's :class:`mdlbench.config.Config`, or a supervised,
bits-back or capacity config) it describes. ``mdlbench`` is a plain CLI whose subcommands
live next to the code they drive; each such module offers ``add_arguments(parser)`` and
``command(args) -> int`` (or ``add_<name>_arguments`` / ``<name>_command`` when one module
serves several subcommands). Modules are imported lazily so that ``mdlbench decode`` can pin the
recorded thread count and XLA flags before JAX is imported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from mdlbench.errors import MdlbenchError, one_line

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "decode": ("mdlbench.codes.decode", "decode any mdlbench container (or a run directory holding one) and check its sha256"),
    "compress": ("mdlbench.compress", "compress a file into a verified .mdl container"),
    "decompress": ("mdlbench.compress", "decompress a .mdl container"),
    "collect": ("mdlbench.analysis.collect", "gather a sweep's runs into one table (CSV + Parquet)"),
    "plot": ("mdlbench.analysis.plots", "scaling-law and prequential figures from a collected table"),
    "estimate": ("mdlbench.analysis.estimates", "Rae-style compression estimate from a loss curve or a run"),
    "bench": ("mdlbench.bench", "neural coder vs classic compressors on one data set: P1-P4 into results/tables/bench.csv"),
    "provenance": ("mdlbench.provenance", "check that every committed result names its command and commit and is what that commit's code gives (--today: also list what today's code would change)"),
    "baselines": ("mdlbench.baselines", "classic compressors (gzip, bzip2, xz, zstd, brotli, PPMd) on the same bytes"),
}

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Launcher presets whose Hydra plugin is an optional extra: preset -> (plugin module, extra).
LAUNCHER_PLUGINS: dict[str, tuple[str, str]] = {
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
}


def missing_launcher_plugin(overrides: list[str]) -> str | None:
    """The one-line error for a ``launcher=NAME`` override whose plugin is not installed, else None.

    Without it Hydra answers with a multi-line composition error that never names the package.

    Args:
        overrides: the command-line arguments of ``mdlbench-train``.

    Returns:
        The message, or None when every requested launcher's plugin can be imported.
    """
    import importlib.util

    for arg in overrides:
        name = arg.split("=", 1)[1] if arg.startswith("launcher=") else None
        if name in LAUNCHER_PLUGINS:
            module, extra = LAUNCHER_PLUGINS[name]
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # no hydra_plugins namespace at all
                found = False
            if not found:
                package = module.rsplit(".", 1)[1].replace("_", "-")
                return f'launcher={name} needs the {package} plugin: pip install -e ".[{extra}]"'
    return None


# glibc's allocator mmaps every block above 32 MB afresh, page by page; the coding step makes such
# temporaries at every step (B x T x K x V float32 counts: 33.5 MB), so without huge pages ~13 % of a
# bench run is the kernel's page faults. The tunable changes the allocator, not the arithmetic:
# the same payload bits (experiments/bench/README.md, levers table: 1.21x the encode speed).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
HUGE_PAGES_OPT_OUT = "MDLBENCH_HUGE_PAGES"  # set to 0 to keep the allocator as it is


def huge_pages_env(environ: dict[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to re-run this process with so that glibc backs large blocks with huge pages.

    Args:
        environ: the current environment.
        platform: ``sys.platform`` (the tunable is glibc's, hence Linux only).

    Returns:
        ``environ`` with :data:`HUGE_PAGES_TUNABLE` added to ``GLIBC_TUNABLES``, or None when there is
        nothing to do (not Linux, already set, or opted out with ``MDLBENCH_HUGE_PAGES=0``).
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not platform.startswith("linux") or environ.get(HUGE_PAGES_OPT_OUT) == "0" or "glibc.malloc.hugetlb" in tunables:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return env


def reexec_with_huge_pages() -> None:
    """Re-runs this very command line once with :func:`huge_pages_env` (glibc reads its tunables only
    when a process starts). Child processes, such as the separate decoder, inherit the setting."""
    env = huge_pages_env(dict(os.environ))
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, list(sys.orig_argv), env)


def console_main() -> int:
    """The ``mdlbench`` console script: :func:`main` in a process with huge pages for large blocks."""
    reexec_with_huge_pages()
    return main()


def console_train_main() -> None:
    """The ``mdlbench-train`` console script: :func:`train_main` with huge pages for large blocks."""
    reexec_with_huge_pages()
    train_main()


def main(argv: list[str] | None = None) -> int:
    """The plain CLI: ``mdlbench SUBCOMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="mdlbench", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mdlbench {name}", description=SUBCOMMANDS[name][1])
    add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    run = getattr(module, f"{name}_command", None) or module.command
    add(parser)
    args = parser.parse_intermixed_args(argv[1:])
    return one_line("mdlbench", lambda: run(args))


def train_main() -> None:
    """``mdlbench-train``: Hydra composes ``conf/``; the library gets a typed :class:`mdlbench.jobs.Job`."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _app(dcfg: DictConfig) -> float | None:
        import logging

        from mdlbench import jobs

        # Hydra sets the root logger to INFO; JAX then reports every backend it did not find.
        logging.getLogger("jax").setLevel(logging.WARNING)
        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax reports every checkpoint save at INFO
        d = OmegaConf.to_container(dcfg, resolve=True)
        d.pop("hydra", None)
        if d.get("run_dir"):  # Hydra's output directory is the run's: a second one would be ignored silently
            print(f"mdlbench-train: error: run_dir={d['run_dir']} is not read here; the run directory is "
                  f"Hydra's: hydra.run.dir=DIR", file=sys.stderr)
            sys.exit(2)
        try:
            job = jobs.with_run_dir(jobs.from_dict(d), HydraConfig.get().runtime.output_dir)
            summary = jobs.run(job)
        except MdlbenchError as e:
            print(f"mdlbench-train: error: {e}", file=sys.stderr)
            sys.exit(2)
        # The sweeper's objective: the byte code's verified bits/byte (other families return None).
        return summary.get("code", {}).get("bits_per_byte") if job.family is None and summary else None

    problem = missing_launcher_plugin(sys.argv[1:])
    if problem:
        print(f"mdlbench-train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    _app()


if __name__ == "__main__":
    sys.exit(console_main())
