"""The ``automl`` command. Exit codes: 0 ok, 1 unexpected, 2 bad usage or input, 3 the tune stopped on a
diagnosis, 130 interrupted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from automl import quiet  # noqa: E402
from automl.errors import RecipeStopped, SearchStopped, TrialFailed, UserError, printable  # noqa: E402


def _sizes(form: str, example: str):
    """An argparse type for comma-separated positive integers such as H,W,C."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != form.count(",") + 1 or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected {form} with positive integers (e.g. {example}), got '{text}'")
        return values

    return parse


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {'integer' if kind is int else 'number'}, "
                                             f"got '{text}'")
        return value

    return parse


_input_shape, _image_size = _sizes("H,W,C", "32,32,3"), _sizes("H,W", "64,64")
_positive_int, _positive_float = _positive(int), _positive(float)


def _gpu_list(text: str) -> list[str]:
    ids = text.split(",")
    if not all(i.strip().isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct GPU numbers separated by commas (e.g. 0,1), got '{text}'")
    return [i.strip() for i in ids]


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", metavar="SPEC",
                        help="digits, mnist, fashion_mnist, cifar10, cifar100, a .npz or .csv file, or a folder "
                             "of class sub-folders")
    parser.add_argument("--image-size", type=_image_size, metavar="H,W", help="resize images from files")


def _store_arguments(parser: argparse.ArgumentParser, study: str = "<space>-<data>") -> None:
    parser.add_argument("--study", metavar="NAME", help=f"default: {study}")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage (default: journal:automl.journal)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow (default: sqlite:///mlflow.db)")
    parser.add_argument("--out", metavar="DIR", help="trial models (default: automl-out)")


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    """What a search is: the space, data, storage, sampler, target; shared by search and study create."""
    parser.add_argument("--space", required=True, metavar="FILE")
    _data_arguments(parser)
    _store_arguments(parser)
    parser.add_argument("--sampler", metavar="NAME",
                        help="optuna: tpe (default), random, cmaes, gp; keras-tuner: bayesian (default), random, "
                             "hyperband")
    parser.add_argument("--pruner", default="hyperband", metavar="NAME",
                        help="optuna: hyperband (default), median, successive-halving, none")
    parser.add_argument("--trials", type=_positive_int,
                        help="target of finished trials in the study (default 20; with --timeout, none: trials run "
                             "until the time is up)")
    parser.add_argument("--epochs", type=_positive_int, help="per trial (default: each configuration's epochs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objective", choices=("val_accuracy", "val_loss"), default="val_accuracy")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="wall-clock bound of the search from its start, for every worker: no trial starts after "
                             "it, and running ones are pruned (once a trial has completed)")
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU speed)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Where trials run: shared by search and tune (whose searches run on the same pool)."""
    parser.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                        help="worker processes sharing the study (default 1: trials run in this process)")
    parser.add_argument("--recycle", type=_positive_int, metavar="K",
                        help="replace each worker process after K trials, so memory stays flat")
    parser.add_argument("--gpus", type=_gpu_list, metavar="IDS", help="one worker per GPU, e.g. 0,1")


def _parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the command; SUPPRESS keeps a subcommand from resetting it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(prog="automl", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    spaces = commands.add_parser("spaces", help="check and explore search-space files").add_subparsers(
        dest="action", required=True
    )
    validate = spaces.add_parser("validate", parents=[common], help="check space files (exit 2 on the first error)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    sample = spaces.add_parser("sample", parents=[common], help="print sampled configurations as YAML")
    sample.add_argument("file", metavar="FILE")
    sample.add_argument("--n", type=_positive_int, default=5)
    sample.add_argument("--seed", type=int, default=0)
    params = spaces.add_parser("params", parents=[common], help="build the default configuration, count params")
    params.add_argument("file", metavar="FILE")
    params.add_argument("--input-shape", type=_input_shape, required=True, metavar="H,W,C")
    params.add_argument("--classes", type=_positive_int, required=True, metavar="K")

    search = commands.add_parser("search", parents=[common], help="search a space on a data set")
    _search_arguments(search)
    search.add_argument("--backend", choices=("optuna", "keras-tuner"), default="optuna")
    search.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    _worker_arguments(search)

    study = commands.add_parser("study", help="manage studies").add_subparsers(dest="action", required=True)
    create = study.add_parser("create", parents=[common], help="create a search for automl worker to run",
                              description="Create a search's study and its MLflow run, and run no trial: start "
                                          "automl worker on any machine to run its trials. Running it again on "
                                          "the same study keeps its trials (and may change its target).")
    _search_arguments(create)

    worker = commands.add_parser("worker", parents=[common], help="join a search: run trials until its target",
                                 description="Run trials of a search started by automl search or automl study "
                                             "create, from this or any machine that reaches the storage "
                                             "(PostgreSQL or MySQL across machines), until its target or its "
                                             "--timeout. Any number of workers may join.")
    worker.add_argument("--study", required=True, metavar="NAME")
    worker.add_argument("--storage", metavar="URL", help="Optuna storage (default: journal:automl.journal)")
    worker.add_argument("--tracking-uri", metavar="URI", help="MLflow (default: sqlite:///mlflow.db)")
    worker.add_argument("--gpu", metavar="ID", help="pin this worker to one GPU (CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--recycle", type=_positive_int, metavar="K", help="exit after K trials")
    worker.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="stop starting trials after")
    worker.add_argument("--seed", type=int, help="sampler seed (default: from host name and process id)")
    worker.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    tune = commands.add_parser("tune", parents=[common], help="tune a space stage by stage, as an expert would",
                               description="Stages: [transfer,] sanity, overfit, lr_range, coarse, diagnose, "
                                           "refine [, diagnose-2, refine-2, ... while a round pays], final. "
                                           "Rerun the same command to resume; finished stages are skipped. "
                                           "Exit code 3: a stage found a problem that more search cannot fix.")
    tune.add_argument("--space", required=True, metavar="FILE")
    _data_arguments(tune)
    _store_arguments(tune, study="<space>-<data>-tune")
    tune.add_argument("--budget", type=_positive_float, default=300.0, metavar="SECONDS",
                      help="wall clock for the whole tune, shared out across the stages (default 300)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--backend", choices=("optuna", "keras-tuner"), default="optuna",
                      help="what runs the searches (default optuna)")
    tune.add_argument("--sampler", metavar="NAME",
                      help="optuna: tpe (default), random, cmaes, gp; keras-tuner: bayesian (default), random, "
                           "hyperband")
    tune.add_argument("--pruner", default="hyperband", metavar="NAME",
                      help="optuna: hyperband (default), median, successive-halving, none")
    tune.add_argument("--objective", choices=("val_accuracy", "val_loss"), default="val_accuracy")
    tune.add_argument("--coarse-epochs", type=_positive_int, default=3, metavar="N",
                      help="epochs per coarse trial (default 3)")
    tune.add_argument("--until", metavar="STAGE",
                      help="stop after this stage (one named above); e.g. lr_range runs the checks only")
    tune.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    _worker_arguments(tune)
    tune.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU speed)")
    tune.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")

    report = commands.add_parser("report", parents=[common], help="write the report of a tune (.md or .html)")
    report.add_argument("--study", required=True, metavar="NAME")
    report.add_argument("--storage", metavar="URL")
    report.add_argument("--out", metavar="FILE", help="default: automl-out/<study>/report.md")

    trials = commands.add_parser("trials", parents=[common], help="list a study's trials")
    trials.add_argument("--study", required=True, metavar="NAME")
    trials.add_argument("--storage", metavar="URL")
    trials.add_argument("--format", choices=("table", "csv", "json"), default="table")

    export = commands.add_parser("export", parents=[common], help="export a study's best model")
    export.add_argument("--study", required=True, metavar="NAME")
    export.add_argument("--storage", metavar="URL")
    export.add_argument("--out", required=True, metavar="DIR")

    predict = commands.add_parser("predict", parents=[common], help="classify images with an exported model")
    predict.add_argument("--model", required=True, metavar="DIR")
    predict.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image files, folders, .npz")

    ui = commands.add_parser("ui", parents=[common], help="start the MLflow UI on 127.0.0.1")
    ui.add_argument("--tracking-uri", metavar="URI")
    ui.add_argument("--port", type=_positive_int, default=5000)

    train = commands.add_parser("train", parents=[common], help="train a space's default configuration")
    train.add_argument("--space", required=True, metavar="FILE")
    _data_arguments(train)
    train.add_argument("--epochs", type=_positive_int, help="override the configuration's epochs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="automl-out", metavar="DIR", help="where the model and config go")
    return parser


def cmd_validate(args) -> None:
    from automl.space import SearchSpace

    for file in args.files:
        space = SearchSpace.load(file)
        print(f"{file}: ok ({len(space.params)} searchable parameters)")


def cmd_sample(args) -> None:
    import optuna
    import yaml

    from automl.space import OptunaSuggester, SearchSpace

    space = SearchSpace.load(args.file)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    docs = [space.sample(OptunaSuggester(study.ask())) for _ in range(args.n)]
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")


def cmd_params(args) -> None:
    from automl.config import TrialConfig
    from automl.model_size import check_size
    from automl.space import SearchSpace

    config = TrialConfig.model_validate(SearchSpace.load(args.file).default())
    check_size(config, args.input_shape, args.classes, training=False)  # before the slow Keras import

    from automl.builder import build_model

    model = build_model(config, args.input_shape, args.classes)
    h, w, c = args.input_shape
    print(f"{args.file}: default configuration, input {h}x{w}x{c}, {args.classes} classes")
    print(f"{'part':<14}{'layers':>8}  {'output shape':<20}{'params':>14}")
    parts: dict[str, list] = {}
    for layer in model.layers[1:]:
        parts.setdefault(layer.name.split("_")[0], []).append(layer)
    for part, layers in parts.items():
        shape = str(tuple(layers[-1].output.shape[1:]))
        print(f"{part:<14}{len(layers):>8}  {shape:<20}{sum(la.count_params() for la in layers):>14,}")
    print(f"params: {model.count_params()}")


def cmd_train(args) -> None:
    import yaml

    from automl import preflight
    from automl.config import TrialConfig
    from automl.data import load_dataset

    space = preflight.check_inputs(args.space, args.data, None)  # before the slow Keras import
    preflight.check_out(args.out)
    config = TrialConfig.model_validate(space.default())
    data = load_dataset(args.data, seed=args.seed, image_size=args.image_size)

    from automl.training.fit import fit
    from automl.training.progress import EpochPrinter

    epochs = args.epochs or config.training.epochs
    print(f"data {data.describe()}")
    print(f"training the default configuration of {args.space} for {epochs} epochs")
    result = fit(config, data, epochs=epochs, seed=args.seed, callbacks=[EpochPrinter(epochs)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.model.save(out / "model.keras")
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    summary = {"best_epoch": result.best_epoch, "params": result.params, "seconds": round(result.seconds, 1),
               **result.metrics}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    test = f", test accuracy {result.metrics['test_accuracy']:.4f}" if "test_accuracy" in result.metrics else ""
    print(f"best epoch {result.best_epoch}: val accuracy {result.metrics['val_accuracy']:.4f}{test}; "
          f"{result.params:,} params, {result.seconds:.1f} s; saved to {out}/")


def _trials(args) -> int | None:
    return args.trials or (None if args.timeout else 20)


def cmd_search(args) -> None:
    from automl.api import search

    search(args.space, args.data, study=args.study, storage=args.storage, tracking_uri=args.tracking_uri,
           out=args.out, backend=args.backend, sampler=args.sampler, pruner=args.pruner, trials=_trials(args),
           timeout=args.timeout, epochs=args.epochs, seed=args.seed, objective=args.objective,
           image_size=args.image_size, verbose=not args.quiet, workers=args.workers, recycle=args.recycle,
           gpus=args.gpus, mixed_precision=args.mixed_precision, jit_compile=args.jit_compile)


def cmd_create_study(args) -> None:
    from automl.api import create_study
    from automl.secrets import masked

    trials = _trials(args)
    study, new = create_study(args.space, args.data, study=args.study, storage=args.storage,
                              tracking_uri=args.tracking_uri, out=args.out, sampler=args.sampler, pruner=args.pruner,
                              trials=trials, timeout=args.timeout, epochs=args.epochs, seed=args.seed,
                              objective=args.objective, image_size=args.image_size,
                              mixed_precision=args.mixed_precision, jit_compile=args.jit_compile)
    from automl.hpo.records import search_deadline
    from automl.hpo.study import finished_count

    done, deadline = finished_count(study), search_deadline(study)
    ends = [f"target {trials} finished trials"] if trials else []
    ends += [f"deadline {datetime.fromtimestamp(deadline):%H:%M:%S}"] if deadline else []
    print(f"study {study.study_name}: {'created' if new else f'exists ({done} finished trials)'}, "
          f"{' or '.join(ends)}; run its trials with: automl worker --study {study.study_name}"
          f"{' --storage ' + masked(args.storage) if args.storage else ''}"
          f"{' --tracking-uri ' + masked(args.tracking_uri) if args.tracking_uri else ''}")


def cmd_worker(args) -> None:
    from automl import settings as defaults
    from automl.hpo import records
    from automl.hpo.storage import load_study
    from automl.hpo.workers import follow_tune, run_worker

    storage, tracking_uri = defaults.storage_url(args.storage), defaults.tracking_uri(args.tracking_uri)
    options = {"seed": args.seed, "recycle": args.recycle, "timeout": args.timeout, "gpu": args.gpu,
               "verbose": not args.quiet}
    if records.StudyInfo.of(load_study(args.study, storage)).kind == "tune":  # serve its search stages
        ran, over = follow_tune(args.study, storage, tracking_uri, **options), None
    else:
        ran, over = run_worker(args.study, storage, tracking_uri, **options)
    where = f" on GPU {args.gpu}" if args.gpu is not None else ""
    why = f": the search is over ({over})" if over else ""
    print(f"worker {os.getpid()}{where}: ran {ran} trials of {args.study}{why}", flush=True)


def cmd_tune(args) -> None:
    from automl.api import tune

    tune(args.space, args.data, study=args.study, storage=args.storage, tracking_uri=args.tracking_uri,
         out=args.out, budget=args.budget, seed=args.seed, sampler=args.sampler, pruner=args.pruner,
         objective=args.objective, coarse_epochs=args.coarse_epochs, image_size=args.image_size, until=args.until,
         verbose=not args.quiet, backend=args.backend, workers=args.workers, recycle=args.recycle, gpus=args.gpus,
         mixed_precision=args.mixed_precision, jit_compile=args.jit_compile)


def cmd_report(args) -> None:
    from automl.api import report

    print(f"wrote {report(args.study, args.out, args.storage)}")


def cmd_trials(args) -> None:
    from automl.api import trials

    frame = trials(args.study, args.storage)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=2))
    else:
        print(frame.to_string(index=False, max_colwidth=30) if not frame.empty else "no trials")


def cmd_export(args) -> None:
    from automl.api import export

    out = export(args.study, args.out, args.storage)
    print(f"exported the best trial of {args.study} to {out}/")


def cmd_predict(args) -> None:
    from automl.api import predict

    for record in predict(args.model, args.input):
        print(json.dumps(record))


def cmd_ui(args) -> None:
    from automl.secrets import masked
    from automl.settings import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    print(f"MLflow UI for {masked(uri)} on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    os.environ["MLFLOW_BACKEND_STORE_URI"] = uri  # not on its command line, which ps shows to everyone
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(args.port)])


COMMANDS = {
    "validate": cmd_validate,
    "sample": cmd_sample,
    "params": cmd_params,
    "train": cmd_train,
    "search": cmd_search,
    "worker": cmd_worker,
    "create": cmd_create_study,
    "tune": cmd_tune,
    "report": cmd_report,
    "trials": cmd_trials,
    "export": cmd_export,
    "predict": cmd_predict,
    "ui": cmd_ui,
}


def main(argv: list[str] | None = None) -> int:
    """The ``automl`` command; ``argv`` given: called in-process (tests), which keeps its stderr."""
    args = _parser().parse_args(argv)
    args.debug = quiet.setup(args.debug, command=argv is None)
    try:
        COMMANDS[getattr(args, "action", None) or args.command](args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"automl: error: {exc}", file=sys.stderr)
        return 2
    except RecipeStopped as exc:
        print(f"automl: tune {printable(str(exc))}", file=sys.stderr)
        return 3
    except (TrialFailed, SearchStopped) as exc:
        print(f"automl: {'training failed: ' if isinstance(exc, TrialFailed) else ''}{printable(str(exc))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not quiet.pool_worker():  # the search that started this worker says it, once
            print("automl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"automl: unexpected error: {type(exc).__name__}: {printable(str(exc))} (run with --debug for the "
              "traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
