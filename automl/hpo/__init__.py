"""Searches (hyperparameter and architecture optimization): Optuna studies, their storage, samplers
and pruners, the trial runner, worker processes, and the KerasTuner backend. Named apart from the
API function ``automl.search``, which an ``automl.search`` package would shadow once imported."""
