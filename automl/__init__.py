"""automl: search Keras CNN architectures and hyperparameters from YAML spaces, tracked in MLflow."""

API = ("search", "create_study", "tune", "report", "trials", "export", "predict")


def __getattr__(name: str):
    # Lazy: `import automl` stays fast; TensorFlow loads only when a search or model needs it.
    if name in API:
        from automl import api

        return getattr(api, name)
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
