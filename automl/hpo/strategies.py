"""Samplers and pruners by the names the CLI takes."""

from __future__ import annotations

import warnings

import optuna

from automl.errors import UserError

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("hyperband", "median", "successive-halving", "none")


def make_sampler(name: str, seed: int | None, trials: int = 100) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":  # multivariate + group model conditional spaces jointly per branch; short
            # searches get fewer random start-up trials than Optuna's 10, or TPE would never start
            startup = min(10, max(3, trials // 4))
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                              constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":  # categorical and conditional parameters fall back to random sampling
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if name == "gp":
            try:
                import torch  # noqa: F401  (Optuna's GPSampler runs on PyTorch)
            except ImportError:
                raise UserError("--sampler gp needs PyTorch: pip install 'automl[gp]'") from None
            return optuna.samplers.GPSampler(seed=seed)
    raise UserError(f"--sampler: unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_epochs: int | None) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto", reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner: unknown pruner '{name}'; use one of {', '.join(PRUNERS)}")
