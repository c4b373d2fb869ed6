"""Backbones for transfer learning: a ``keras.applications`` network or a saved Keras model,
cut into stages, behind the layers (``adapters``) that adapt the model's images to what it was trained on.

A backbone's *stages* are found in its graph, whatever its family: a layer is a possible cut
point when everything after it depends on the rest only through its output (the end of a
residual or dense block, any layer of a plain chain). A stage ends at the last cut point
before the feature map's resolution changes. ResNet50's stages so found end at ``conv1_relu``,
``conv2_block3_out``, ..., ``conv5_block3_out``; an automl model's at its stem and stages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras

from automl.blocks.adapters import AdaptChannels, ApplicationInput
from automl.config import Backbone, TrialConfig
from automl.errors import ArchitectureError, SpaceError
from automl.saving import load_network
from automl.space import SearchSpace

NAME = "backbone"  # the nested model's name in the models built on it
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}  # else keras.applications' 32
AUTOML_INPUT_LAYERS = ("rescale", "aug_")  # an automl model's own pixel scaling and augmentation


@dataclass(frozen=True)
class Stage:
    end: str  # the name of its last layer: its output is the stage's output
    layers: tuple[keras.layers.Layer, ...]


def attach(x, spec: Backbone):
    """``x`` ([0, 1] pixels) through the adapters and the backbone, as a nested model ``backbone``."""
    features = load(spec, (x.shape[1], x.shape[2]))
    return features(_adapt(x, features, spec))


def check(space: SearchSpace, input_shape: tuple[int, int, int]) -> None:
    """Load the backbone of ``space``'s default configuration once, so that missing weights or a
    bad cut stop a search with one line before it writes anything, not trial after trial."""
    spec = TrialConfig.model_validate(space.default()).model.backbone
    if spec is not None:
        try:
            load(spec, input_shape[:2])
        except ArchitectureError as exc:
            raise SpaceError(space.file, None, "model.backbone", str(exc)) from None
        keras.backend.clear_session()


def pooled_features(spec: Backbone, input_shape: tuple[int, int, int], pixel_scale: float, depth: int) -> keras.Model:
    """Raw images to the backbone's globally average-pooled features at the ends of its top
    ``depth`` stages, the top first (``cut`` 0, 1, ...): what a linear probe reads."""
    features = load(spec, input_shape[:2])
    ends = [stage.end for stage in stages(features)][::-1][:depth]
    nodes = _ordered_nodes(features)
    pooled = keras.Model(features.input, [keras.layers.GlobalAveragePooling2D()(_output_of(nodes, end))
                                          for end in ends])
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Rescaling(pixel_scale)(inputs)
    return keras.Model(inputs, pooled(_adapt(x, features, spec)))


def _adapt(x, features: keras.Model, spec: Backbone):
    """Resize, match the channels and preprocess ``x`` as ``features`` expects."""
    height, width, channels = features.input.shape[1:]
    if (x.shape[1], x.shape[2]) != (height, width):
        x = keras.layers.Resizing(height, width, name=f"{NAME}_resize")(x)
    if x.shape[-1] != channels:
        if 1 not in (x.shape[-1], channels):
            raise ArchitectureError(f"backbone {spec.source}: takes {channels}-channel images, the data has "
                                    f"{x.shape[-1]} channels")
        x = AdaptChannels(channels, name=f"{NAME}_channels")(x)
    if spec.application:
        x = ApplicationInput(spec.source, name=f"{NAME}_preprocess")(x)
    return x


def load(spec: Backbone, image_size: tuple[int, int]) -> keras.Model:
    """The backbone cut as ``spec`` says, as a model named ``backbone`` (``image_size``: the
    images', from which an application's input size follows)."""
    if spec.application:
        source = _application(spec, spec.input_size or max(*image_size, MIN_SIZE.get(spec.source, 32)))
        start = 1  # the input
    else:
        if spec.input_size:
            raise ArchitectureError(f"backbone {spec.source}: input_size applies to keras.applications "
                                    "networks; a saved model takes the image size it was built for")
        source = _model_file(spec)
        start = _first_feature_node(source)
    nodes = _ordered_nodes(source)
    found = stages(source, nodes[start:])
    if not found:
        raise ArchitectureError(f"backbone {spec.source}: no convolutional feature map to cut at")
    end = _cut(found, spec)
    features = keras.Model(nodes[start - 1].outputs[0], _output_of(nodes, end), name=NAME)
    if spec.weights == "random" and not spec.application:
        features = keras.models.clone_model(features)  # fresh layers, freshly initialised
    return features


def stages(model: keras.Model, nodes: list | None = None) -> list[Stage]:
    """The model's stages, bottom to top (see the module's docstring); layers after the last
    feature map (pooling, the classifier) belong to none. ``nodes``: the part of the model's
    graph to look at, in topological order (default: all of it)."""
    nodes = nodes if nodes is not None else _ordered_nodes(model)
    position = {id(n): i for i, n in enumerate(nodes)}
    reach = list(range(len(nodes)))  # the last node that consumes each node's output
    for k, node in enumerate(nodes):
        for parent in node.parent_nodes:
            if id(parent) in position:
                reach[position[id(parent)]] = max(reach[position[id(parent)]], k)
    runs: list[list[int]] = []  # cut points grouped by resolution
    furthest = -1  # the furthest any earlier node's output reaches
    for i, node in enumerate(nodes):
        size = _spatial_size(node)
        if furthest <= i and size is not None:
            if runs and _spatial_size(nodes[runs[-1][-1]]) == size:
                runs[-1].append(i)
            else:
                runs.append([i])
        furthest = max(furthest, reach[i])
    found: list[Stage] = []
    begin = 0
    for run in runs:
        layers = tuple(n.operation for n in nodes[begin : run[-1] + 1]
                       if not isinstance(n.operation, keras.layers.InputLayer))
        begin = run[-1] + 1
        if found and not any(layer.weights for layer in found[-1].layers):
            layers = found.pop().layers + layers  # padding and the like join the stage they feed
        found.append(Stage(nodes[run[-1]].operation.name, layers))
    if len(found) > 1 and not any(layer.weights for layer in found[-1].layers):
        last = found.pop()  # a final pooling joins the stage before it
        found[-1] = Stage(last.end, found[-1].layers + last.layers)
    return found


def _cut(found: list[Stage], spec: Backbone) -> str:
    if isinstance(spec.cut, str):
        ends = [s.end for s in found]
        if spec.cut not in {layer.name for s in found for layer in s.layers}:
            raise ArchitectureError(f"backbone {spec.source}: cut {spec.cut!r} is not a layer of its features; "
                                    f"its stages end at {', '.join(ends)}")
        return spec.cut
    if spec.cut >= len(found):
        raise ArchitectureError(f"backbone {spec.source}: cut {spec.cut} drops all its {len(found)} stages")
    return found[len(found) - 1 - spec.cut].end


def _application(spec: Backbone, side: int) -> keras.Model:
    build = getattr(keras.applications, spec.source)
    weights = {"pretrained": "imagenet", "random": None}.get(spec.weights, spec.weights)
    try:
        return build(include_top=False, weights=weights, input_shape=(side, side, 3))
    except ValueError as exc:
        raise ArchitectureError(f"backbone {spec.source}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # the download of weights missing from the Keras cache, offline
        cache = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"
        raise ArchitectureError(
            f"backbone {spec.source}: its ImageNet weights are not in the Keras cache ({cache}) and could not be "
            f"downloaded ({type(exc).__name__}); copy them there or give weights: PATH") from None


def _model_file(spec: Backbone) -> keras.Model:
    path = Path(spec.source)
    if path.is_dir():
        path = path / "model.keras"  # the layout automl export writes
    if not path.is_file():
        raise ArchitectureError(f"backbone {spec.source}: no such model file or keras.applications network")
    try:
        model = load_network(path)
        if spec.weights not in ("pretrained", "random"):
            model.load_weights(spec.weights)
    except (OSError, ValueError) as exc:  # not a Keras model, or weights of another architecture
        raise ArchitectureError(f"backbone {spec.source}: cannot load ({str(exc).splitlines()[0][:200]})") from None
    return model


def _first_feature_node(model: keras.Model) -> int:
    """The position of the first node after the input and automl's own pixel scaling and augmentation:
    the backbone is fed [0, 1] pixels by the model built on it, which augments for itself."""
    nodes = _ordered_nodes(model)
    start = 1
    while start < len(nodes) and nodes[start].operation.name.startswith(AUTOML_INPUT_LAYERS):
        start += 1
    return start


def _ordered_nodes(model: keras.Model) -> list:
    """The model's graph nodes in a topological order (deepest first: inputs, then onwards)."""
    by_depth = model._nodes_by_depth  # Keras keeps no public view of its functional graph
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _output_of(nodes: list, name: str):
    return next(node.outputs[0] for node in nodes if node.operation.name == name)


def _spatial_size(node) -> tuple | None:
    if len(node.outputs) != 1 or len(node.outputs[0].shape) != 4:
        return None
    return tuple(node.outputs[0].shape[1:3])
