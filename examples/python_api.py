"""Use automl from Python: load a space, sample a configuration, train it on digits.

    python examples/python_api.py            # 3 random configurations of quick.yaml, 5 epochs each
"""

import os
from pathlib import Path

import optuna

from automl.config import TrialConfig
from automl.data import load_dataset
from automl.errors import TrialFailed
from automl.space import OptunaSuggester, SearchSpace
from automl.training.fit import fit

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"


def main(trials: int, epochs: int) -> None:
    space = SearchSpace.load(SPACE)
    data = load_dataset("digits", seed=0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials):
        trial = study.ask()
        config = TrialConfig.model_validate(space.sample(OptunaSuggester(trial)))
        try:
            result = fit(config, data, epochs=epochs, seed=0)
        except TrialFailed as failure:
            print(f"trial {trial.number}: failed ({failure})")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, result.metrics["val_accuracy"])
        print(f"trial {trial.number}: val accuracy {result.metrics['val_accuracy']:.3f} "
              f"with {config.model.stages[0].family}/{config.model.stages[1].family} stages, "
              f"{config.training.optimizer.name} lr {config.training.optimizer.learning_rate:.2g}")
    print(f"best: trial {study.best_trial.number}, val accuracy {study.best_value:.3f}")


if __name__ == "__main__":
    main(trials=int(os.environ.get("TRIALS", 3)), epochs=int(os.environ.get("EPOCHS", 5)))
