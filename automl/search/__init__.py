"""Searches: Optuna studies (storage, samplers, pruners) and the KerasTuner backend."""
