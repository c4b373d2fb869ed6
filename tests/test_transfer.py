"""Transfer learning: backbones cut into stages, freeze policies, the phased fine-tuning, the
tune's policy choice, and export/predict of a transferred model, on real digits data.

The backbones are made here, offline: an automl model trained on digits 0-4 (reused for 5-9),
and keras.applications networks with random weights.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from automl.blocks import backbone
from automl.config import Backbone, TrialConfig
from automl.data import Dataset
from automl.errors import ArchitectureError, SpaceError
from automl.recipe import transfer
from automl.recipe.outcomes import StageRecord, TransferOutputs
from automl.recipe.stages.transfer import Transfer
from automl.saving import load_model
from automl.space import SearchSpace
from automl.training import phases
from automl.training.fit import fit

from .conftest import ROOT
from .test_recipe_stages import FakeContext

# layers with weights at 8x8, 4x4 and 2x2: three stages; batch norm, so that frozen statistics
# can be checked
SOURCE_MODEL = {"batch_norm": True, "stages": [
    {"family": "vgg", "filters": 8, "convs": 1},
    {"family": "resnet", "filters": 16, "blocks": 1, "strides": 1},
    {"family": "resnet", "filters": 16, "blocks": 1, "strides": 2},
]}


def _classes(data: Dataset, low: int, high: int) -> Dataset:
    """The images of classes low..high, relabelled from 0."""

    def part(x, y):
        keep = (y >= low) & (y <= high)
        return x[keep], y[keep] - low

    x_train, y_train = part(data.x_train, data.y_train)
    x_val, y_val = part(data.x_val, data.y_val)
    x_test, y_test = part(data.x_test, data.y_test)
    return dataclasses.replace(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                               y_test=y_test, num_classes=high - low + 1, class_names=None)


@pytest.fixture(scope="module")
def digit_backbone(digits, tmp_path_factory):
    """A model trained on digits 0-4, saved as automl saves its trials' models."""
    result = fit(TrialConfig.model_validate({"model": SOURCE_MODEL, "training": {"epochs": 6}}), _classes(digits, 0, 4),
                 seed=0)
    path = tmp_path_factory.mktemp("backbone") / "digits04.keras"
    result.model.save(path)
    return path


@pytest.fixture(scope="module")
def upper_digits(digits):
    return _classes(digits, 5, 9)


def _config(source, epochs=3, schedule="constant", **backbone_fields) -> TrialConfig:
    return TrialConfig.model_validate({
        "model": {"backbone": {"source": str(source), **backbone_fields}, "head": {"dropout": 0.1}},
        "training": {"epochs": epochs, "optimizer": {"name": "adam", "learning_rate": 3e-3},
                     "schedule": {"name": schedule}},
    })


def _backbone_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    nested = model.get_layer(backbone.NAME)
    return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in nested.layers if layer.weights}


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name],
                                                                                     strict=True))}


# --- stages and cuts ------------------------------------------------------------------------


def test_stages_of_keras_applications_end_where_their_authors_cut_them():
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    assert [s.end for s in backbone.stages(resnet)] == [
        "conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert [s.end for s in backbone.stages(vgg)] == [
        "block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_pool"]
    # every layer with weights belongs to exactly one stage
    grouped = [layer.name for s in backbone.stages(resnet) for layer in s.layers]
    assert len(grouped) == len(set(grouped))
    assert {layer.name for layer in resnet.layers if layer.weights} <= set(grouped)


def test_an_automl_models_stages_skip_its_pixel_scaling_and_augmentation(digit_backbone):
    built = backbone.load(Backbone(source=str(digit_backbone)), (8, 8))
    assert [s.end for s in backbone.stages(built)] == ["stage1_conv1_relu", "stage2_block1_out", "stage3_block1_out"]
    assert not any(layer.name.startswith(("rescale", "aug_", "head_", "predictions")) for layer in built.layers)


def test_a_final_model_that_averages_networks_and_views_is_a_backbone_of_its_first_network(tmp_path,
                                                                                          digit_backbone):
    from automl.saving import load_model
    from automl.training.test_time import averaged, candidate_views

    first, second = load_model(digit_backbone), load_model(digit_backbone)
    for layer in second.layers:  # a second network of its own weights
        layer.set_weights([w + 1.0 for w in layer.get_weights()])
    final = tmp_path / "final.keras"
    averaged([first, second], candidate_views()["mirror+shifts"]).save(final)
    direct, unwrapped = (backbone.load(Backbone(source=str(path)), (8, 8)) for path in (digit_backbone, final))
    assert [s.end for s in backbone.stages(unwrapped)] == [s.end for s in backbone.stages(direct)]
    assert all(np.array_equal(a, b) for a, b in zip(unwrapped.get_weights(), direct.get_weights(), strict=True))


def test_cut_drops_stages_from_the_top_or_keeps_a_named_layer(digit_backbone):
    full = backbone.load(Backbone(source=str(digit_backbone)), (8, 8))
    assert full.output.shape[1:] == (2, 2, 16)
    one_less = backbone.load(Backbone(source=str(digit_backbone), cut=1), (8, 8))
    assert one_less.output.shape[1:] == (4, 4, 16) and one_less.layers[-1].name == "stage2_block1_out"
    named = backbone.load(Backbone(source=str(digit_backbone), cut="stage1_pool"), (8, 8))
    assert named.output.shape[1:] == (4, 4, 8)
    with pytest.raises(ArchitectureError, match="stages end at stage1_conv1_relu, stage2_block1_out"):
        backbone.load(Backbone(source=str(digit_backbone), cut="head_gap"), (8, 8))
    with pytest.raises(ArchitectureError, match="drops all its 3 stages"):
        backbone.load(Backbone(source=str(digit_backbone), cut=3), (8, 8))


# --- freeze policies and phases -------------------------------------------------------------


@pytest.mark.parametrize("trainable, trained_stages", [("head", 0), ("top", 1), ("all", 3)])
def test_freeze_policy_decides_which_stages_learn(digit_backbone, upper_digits, trainable, trained_stages):
    config = _config(digit_backbone, epochs=2, trainable=trainable, trainable_stages=1)
    loaded = backbone.load(config.model.backbone, (8, 8))
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in loaded.layers if layer.weights}
    result = fit(config, upper_digits, seed=0)
    after = _backbone_weights(result.model)
    found = backbone.stages(result.model.get_layer(backbone.NAME))
    learned = [bool(_changed({x.name: before[x.name] for x in s.layers if x.weights}, after)) for s in found]
    assert learned == [i >= len(found) - trained_stages for i in range(len(found))]
    if trainable == "head":  # frozen batch norm ran in inference mode: its statistics did not move
        bn = result.model.get_layer(backbone.NAME).get_layer("stage2_block1_1_bn")
        assert np.array_equal(bn.moving_mean.numpy(), before["stage2_block1_1_bn"][2])


def test_phase_plan():
    spec = Backbone.model_construct(trainable="all", trainable_stages=1, fine_tune_lr=0.1, warmup_epochs=2,
                                    unfreeze_every=1)
    assert phases.plan(spec, 3, 10) == [phases.Phase(0, 2, 0, 1.0), phases.Phase(2, 3, 1, 0.1),
                                        phases.Phase(3, 4, 2, 0.1), phases.Phase(4, 10, 3, 0.1)]
    assert phases.plan(spec.model_copy(update={"warmup_epochs": 0, "unfreeze_every": 0}), 3, 5) == [
        phases.Phase(0, 5, 3, 0.1)]
    assert phases.plan(spec.model_copy(update={"trainable": "top", "trainable_stages": 5}), 3, 3) == [
        phases.Phase(0, 2, 0, 1.0), phases.Phase(2, 3, 1, 0.1)]  # the run ends before more unfreezing
    assert phases.plan(spec.model_copy(update={"trainable": "head"}), 3, 4) == [phases.Phase(0, 4, 0, 1.0)]
    assert phases.plan(None, 0, 4) == [phases.Phase(0, 4, 0, 1.0)]


class _TrainableStages(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        found = backbone.stages(self.model.get_layer(backbone.NAME))
        self.per_epoch.append(sum(any(layer.trainable for layer in s.layers) for s in found))


def test_two_phase_schedule_with_progressive_unfreezing(digit_backbone, upper_digits):
    config = _config(digit_backbone, epochs=5, schedule="cosine", trainable="all", warmup_epochs=1, unfreeze_every=1,
                     fine_tune_lr=0.1)
    seen = _TrainableStages()
    result = fit(config, upper_digits, seed=0, callbacks=[seen])
    assert seen.per_epoch == [0, 1, 2, 3, 3]  # head warm-up, then one more stage per epoch from the top
    lr = result.history["learning_rate"]
    steps = -(-len(upper_digits.x_train) // config.training.batch_size)
    cosine = keras.optimizers.schedules.CosineDecay(3e-3, 5 * steps)
    expected = [float(cosine((epoch + 1) * steps)) * (1.0 if epoch == 0 else 0.1) for epoch in range(5)]
    np.testing.assert_allclose(lr, expected, rtol=1e-3)  # one schedule over the run, a tenth while fine-tuning
    assert len(result.history["loss"]) == 5 and 1 <= result.best_epoch <= 5


# --- adapting inputs, keras.applications, saving -------------------------------------------


def test_grey_small_images_feed_a_colour_application_saved_to_a_file(tmp_path, upper_digits):
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    path = tmp_path / "mobilenet.keras"
    source.save(path)
    config = _config(path, epochs=1, trainable="top", trainable_stages=1)
    result = fit(config, upper_digits, seed=0)
    names = [layer.name for layer in result.model.layers]
    assert names.index("backbone_resize") < names.index("backbone_channels") < names.index(backbone.NAME)
    assert result.model.get_layer(backbone.NAME).input.shape[1:] == (32, 32, 3)
    saved = tmp_path / "transferred.keras"
    result.model.save(saved)
    again = load_model(saved)
    images = upper_digits.x_val[:16]
    np.testing.assert_allclose(again.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-5)


def test_a_fine_tuned_model_reloads_with_its_phase_schedule_in_a_fresh_process(tmp_path, digit_backbone,
                                                                              upper_digits):
    config = _config(digit_backbone, epochs=2, schedule="cosine", trainable="all", warmup_epochs=1)
    saved = tmp_path / "fine_tuned.keras"
    fit(config, upper_digits, seed=0).model.save(saved)
    # a fresh process imports automl.saving alone: it must register all that automl models hold
    load = (f"from automl.saving import load_model; m = load_model({str(saved)!r}, compile=True); "
            "print(m.optimizer.get_config()['learning_rate']['class_name'])")
    done = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["PhaseSchedule"]


def test_application_by_name_gets_its_own_preprocessing_and_minimum_size(upper_digits):
    config = _config("MobileNetV2", epochs=1, weights="random")
    model = backbone.load(config.model.backbone, (8, 8))
    assert model.input.shape[1:] == (32, 32, 3)  # keras.applications' minimum side
    built = fit(config, upper_digits, seed=0, epochs=1).model
    assert built.get_layer("backbone_preprocess").application == "MobileNetV2"


def test_missing_imagenet_weights_offline_is_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(ArchitectureError, match=r"ImageNet weights are not in the Keras cache .* weights: PATH"):
        backbone.load(Backbone(source="MobileNetV2"), (32, 32))


def test_space_errors_name_the_file_and_field(write_space, digit_backbone):
    bad_name = write_space("""
        model:
          backbone: {source: ResNet5O}
    """)
    with pytest.raises(SpaceError, match="ResNet5O.* is not a keras.applications network") as caught:
        SearchSpace.load(bad_name)
    assert str(bad_name) in str(caught.value)
    with pytest.raises(SpaceError, match="no such model file"):
        SearchSpace.load(write_space("model:\n  backbone: {source: missing/model.keras}\n"))
    with pytest.raises(SpaceError, match="has no stem"):
        SearchSpace.load(write_space(f"""
            model:
              backbone: {{source: {digit_backbone}}}
              stem: [{{filters: 8}}]
        """))


# --- the tune's policy ----------------------------------------------------------------------


@pytest.mark.parametrize("small, similar, cut, expected", [
    (True, True, 1, {"trainable": "all", "cut": 0, "fine_tune_lr": 1.0, "warmup_epochs": 0}),
    (True, False, 1, {"trainable": "all", "cut": 0, "fine_tune_lr": 1.0, "warmup_epochs": 0}),
    (False, True, 0, {"trainable": "all", "warmup_epochs": 1, "unfreeze_every": 1,
                      "fine_tune_lr": transfer.FINE_TUNE_LR}),
    (False, False, 2, {"trainable": "all", "cut": 0, "fine_tune_lr": 1.0, "warmup_epochs": 0}),
])
def test_policy_follows_the_table(small, similar, cut, expected):
    policy, why = transfer._policy(small, similar, cut)
    assert expected.items() <= policy.items() and why


def test_probe_reads_the_backbones_own_classes_as_similar(digits, digit_backbone, upper_digits):
    own = transfer.read(Backbone(source=str(digit_backbone)), _classes(digits, 0, 4), seed=0)
    assert own.helps and own.similar and own.gain > 3 * own.gain_error
    assert own.probes[0]["pretrained"] > own.probes[0]["random"] + 0.03
    assert own.policy["trainable"] == "all" and "weights" not in own.policy  # small: nothing frozen
    reading = transfer.read(Backbone(source=str(digit_backbone)), upper_digits, seed=0)
    assert [p["cut"] for p in reading.probes] == [0, 1, 2]
    assert reading.small and reading.per_class == len(upper_digits.y_train) / 5
    # On digits 5-9, features learned on 0-4 probe no better than the untrained network's (0.855
    # against 0.842 at cut 1, the best of the pretrained cuts, +0.013 ± 0.017): frozen, they would
    # not help, so the whole network trains at the full LR from the trained weights.
    assert reading.cut == 1 and not reading.helps and not reading.harms and abs(reading.gain) <= reading.gain_error
    assert reading.cell == "small and unhelpful" and not reading.similar
    assert reading.policy == {"cut": 0, "trainable": "all", "fine_tune_lr": 1.0, "warmup_epochs": 0,
                              "unfreeze_every": 0}
    assert reading.cell in reading.why and "would not help" in reading.why and "trained weights" in reading.why


def test_features_that_probe_worse_than_random_ones_train_the_network_from_scratch(digit_backbone, upper_digits):
    """A backbone whose weights were all zeroed: its features are one constant, less than the
    untrained network's, so the policy drops them and starts from random weights."""
    from automl.saving import load_model

    zeroed = load_model(digit_backbone)
    for layer in zeroed.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    reading = transfer.read(Backbone(source=str(_saved(zeroed, digit_backbone.parent / "zeroed.keras"))),
                            upper_digits, seed=0)
    assert reading.harms and reading.gain < -reading.gain_error and reading.cell == "small and harmful"
    assert reading.policy["weights"] == "random" and reading.policy["trainable"] == "all"
    assert "from scratch" in reading.why


def test_a_class_of_one_image_is_still_read_without_a_warning(digit_backbone, upper_digits):
    import warnings

    keep = np.flatnonzero(upper_digits.y_train != 0)[:60].tolist() + [int(np.flatnonzero(upper_digits.y_train == 0)[0])]
    drop_val = upper_digits.y_val != 0
    few = dataclasses.replace(upper_digits, x_train=upper_digits.x_train[keep], y_train=upper_digits.y_train[keep],
                              x_val=upper_digits.x_val[drop_val], y_val=upper_digits.y_val[drop_val])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reading = transfer.read(Backbone(source=str(digit_backbone)), few, seed=0)
    assert len(reading.probes) == 3 and reading.policy["trainable"] == "all"
    assert not [w for w in caught if "sklearn" in w.filename], [str(w.message) for w in caught]


def test_a_model_of_the_averaged_name_but_no_network_inside_is_a_backbone_as_it_is(tmp_path, digit_backbone):
    from automl.saving import load_model

    own = load_model(digit_backbone)
    renamed = keras.Model(own.inputs, own.outputs, name="averaged")
    path = _saved(renamed, tmp_path / "averaged.keras")
    assert [s.end for s in backbone.stages(backbone.load(Backbone(source=str(path)), (8, 8)))] == \
        [s.end for s in backbone.stages(backbone.load(Backbone(source=str(digit_backbone)), (8, 8)))]


def _saved(model, path):
    model.save(path)
    return path


def _npz(data: Dataset, path):
    """``data`` as an .npz of uint8 images (0-255), which automl scales by 1/255."""
    def pixels(x):
        return np.round(x * data.pixel_scale * 255).astype("uint8")

    np.savez(path, x_train=pixels(data.x_train), y_train=data.y_train, x_val=pixels(data.x_val), y_val=data.y_val,
             x_test=pixels(data.x_test), y_test=data.y_test)
    return path


def _automl(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "automl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _transfer_space(path, backbone):
    """A space over a trained backbone whose trainability and cut the transfer policy sets."""
    path.write_text(f"""
model:
  backbone:
    source: {backbone}
    trainable: {{choice: [head, top, all], default: all}}
    cut: {{int: [0, 2], default: 2}}
  head: {{dropout: {{float: [0.0, 0.3], default: 0.1}}}}
training:
  epochs: 4
  optimizer: {{name: adam, learning_rate: {{float: [1.0e-4, 1.0e-2], log: true, default: 3.0e-3}}}}
""")
    return path


def test_the_transfer_stage_starts_the_space_from_its_readings_policy(tmp_path, digit_backbone, upper_digits):
    ctx = FakeContext(tmp_path, upper_digits, space=_transfer_space(tmp_path / "transfer.yaml", digit_backbone))
    result = Transfer().run(ctx, 30)
    policy = result.outputs.policy
    assert isinstance(result.outputs, TransferOutputs) and result.ok and result.verdict == "small_unhelpful"
    rewritten = SearchSpace.load(result.outputs.space).default()["model"]["backbone"]
    assert {k: rewritten[k] for k in ("trainable", "cut", "warmup_epochs")} == \
        {k: policy[k] for k in ("trainable", "cut", "warmup_epochs")}
    assert ctx.logged == [Path(result.outputs.space)]  # the rewritten space is logged to the stage's run
    assert result.measured["probe_cut1_pretrained"] == result.outputs.probes[1]["pretrained"]
    assert abs(result.measured["probe_gain"]) <= result.measured["probe_gain_se"]
    table = "".join(Transfer().report(_record_of(result), None))
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("|")][2:]  # past the header
    assert "probe accuracy, trained backbone" in table
    assert [(int(cut), float(trained)) for cut, trained, _ in rows] == \
        [(p["cut"], round(p["pretrained"], 3)) for p in result.outputs.probes]


def _record_of(result):
    return StageRecord(ok=result.ok, verdict=result.verdict, summary=result.summary, outputs=result.outputs,
                       stage="transfer", kind="transfer", seconds=1.0)


def test_tune_starts_from_the_policy_its_measurements_pick(tmp_path, digit_backbone, upper_digits):
    data = _npz(upper_digits, tmp_path / "digits59.npz")
    space = _transfer_space(tmp_path / "transfer.yaml", digit_backbone)
    out = _automl("tune", "--space", str(space), "--data", str(data), "--budget", "90", "--until", "sanity",
                  "--study", "t", cwd=tmp_path)
    assert "[1/8] transfer" in out
    from automl.hpo.storage import load_study

    study = load_study("t", f"journal:{tmp_path}/automl.journal")
    record = study.user_attrs["stage:transfer"]
    policy = record["outputs"]["policy"]
    assert record["ok"] and record["verdict"] in ("small_similar", "small_different", "small_unhelpful",
                                                  "small_harmful")
    assert record["summary"].startswith(f"{len(upper_digits.y_train) / 5:.0f} training images per class")
    rewritten = SearchSpace.load(tmp_path / record["outputs"]["space"]).default()["model"]["backbone"]
    assert rewritten["trainable"] == policy["trainable"] and rewritten["cut"] == policy["cut"]
    assert rewritten.get("weights", "pretrained") == policy.get("weights", "pretrained")
    assert rewritten["warmup_epochs"] == policy["warmup_epochs"]  # left out by the space: set by the policy
    assert study.user_attrs["stage:sanity"]["ok"]  # the next stage ran on the policy's configuration


def test_search_export_and_predict_with_an_exported_model_as_backbone(tmp_path, digits):
    lower, upper = _npz(_classes(digits, 0, 4), tmp_path / "lower.npz"), _npz(_classes(digits, 5, 9),
                                                                               tmp_path / "upper.npz")
    source = tmp_path / "source.yaml"
    source.write_text(f"model: {json.dumps(SOURCE_MODEL)}\ntraining: {{epochs: 4}}\n")
    _automl("search", "--space", str(source), "--data", str(lower), "--trials", "1", "--study", "lower", cwd=tmp_path)
    _automl("export", "--study", "lower", "--out", "lower-model", cwd=tmp_path)
    target = tmp_path / "target.yaml"
    target.write_text("""
model:
  backbone: {source: lower-model, trainable: {choice: [head, all], default: head}}
  head: {dropout: 0.1}
training: {epochs: 10, optimizer: {name: adam, learning_rate: 3.0e-3}}
""")
    _automl("search", "--space", str(target), "--data", str(upper), "--trials", "2", "--study", "upper", cwd=tmp_path)
    _automl("export", "--study", "upper", "--out", "upper-model", cwd=tmp_path)
    info = json.loads((tmp_path / "upper-model" / "automl.json").read_text())
    assert info["config"]["model"]["backbone"]["source"] == "lower-model"
    images = tmp_path / "images.npz"
    np.savez(images, x=np.load(upper)["x_test"])
    out = _automl("predict", "--model", "upper-model", "--input", str(images), cwd=tmp_path)
    predicted = [row["index"] for row in map(json.loads, out.splitlines())]
    assert np.mean(np.array(predicted) == np.load(upper)["y_test"]) > 0.4  # chance: 0.2


def test_a_backbone_that_cannot_load_stops_the_search_before_it_writes(tmp_path, digit_backbone):
    space = tmp_path / "space.yaml"
    space.write_text(f"model:\n  backbone: {{source: {digit_backbone}, cut: 3}}\n")
    done = subprocess.run([sys.executable, "-m", "automl.cli", "search", "--space", str(space), "--data", "digits",
                           "--trials", "2"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"automl: error: {space}: model.backbone: backbone "
                                                    f"{digit_backbone}: cut 3 drops all its 3 stages")
    assert not (tmp_path / "automl.journal").exists() and not (tmp_path / "mlflow.db").exists()


def test_weights_that_do_not_load_are_one_clear_error(tmp_path, digit_backbone):
    with pytest.raises(ArchitectureError, match=r"backbone .*digits04.keras: cannot load \("):
        backbone.load(Backbone(source=str(digit_backbone), weights=str(tmp_path / "missing.weights.h5")), (8, 8))


def test_tune_reads_a_trained_backbone_only(tmp_path, digit_backbone):
    from automl.recipe.outcomes import Outcomes
    from automl.recipe.plan import plan

    def stages(weights: str) -> list[str]:
        space = tmp_path / f"{weights}.yaml"
        space.write_text(f"model: {{backbone: {{source: {digit_backbone}, weights: {weights}, trainable: all}}}}\n")
        return [stage.name for stage in plan(SearchSpace.load(space), Outcomes())]

    assert stages("pretrained")[0] == "transfer"
    assert stages("random")[0] == "sanity"  # untrained: no features to probe, trained from scratch
