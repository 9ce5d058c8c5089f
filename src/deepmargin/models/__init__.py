"""Model zoo with named layers: the paper's MNIST CNN, an MLP, a small CNN for 8x8 digits, a wide ResNet,
LeNet-5 and the MLP 784-1000-1000-1000-10 of Matyasko & Chau (2017).

Layer names follow one scheme (see :mod:`deepmargin.models.cnn`): ``convK``/``fcK`` are the
pre-activations, ``reluK`` the hidden representations; ``model.hidden_layers`` lists the latter.
The paper's MNIST margin "on the input, both conv layers and the fc layer" is
``["input", "relu1", "relu2", "relu3"]`` for ``build_model("mnist_cnn", ...)``.

Any other classifier (a TorchScript file, an exported program, ``module:callable`` with a state
dict) is read by :func:`load_classifier` and wrapped in a :class:`ClassifierAdapter`.
"""

from .cnn import DigitsCNN, MnistCNN
from .external import ClassifierAdapter, load_classifier
from .lenet import MLP3x1000, LeNet5
from .mlp import MLP
from .registry import MODELS, build_model, model_options
from .wrn import WideResNet

__all__ = [
    "MLP", "MLP3x1000", "MODELS", "ClassifierAdapter", "DigitsCNN", "LeNet5", "MnistCNN", "WideResNet", "build_model",
    "load_classifier", "model_options",
]
