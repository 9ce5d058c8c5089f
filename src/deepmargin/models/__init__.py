"""Model zoo with named layers: the paper's MNIST CNN, an MLP, a small CNN for 8x8 digits, a wide ResNet.

Layer names follow one scheme (see :mod:`deepmargin.models.cnn`): ``convK``/``fcK`` are the
pre-activations, ``reluK`` the hidden representations; ``model.hidden_layers`` lists the latter.
The paper's MNIST margin "on the input, both conv layers and the fc layer" is
``["input", "relu1", "relu2", "relu3"]`` for ``build_model("mnist_cnn", ...)``.
"""

from .cnn import DigitsCNN, MnistCNN
from .mlp import MLP
from .registry import MODELS, build_model, model_options
from .wrn import WideResNet

__all__ = ["MODELS", "MLP", "DigitsCNN", "MnistCNN", "WideResNet", "build_model", "model_options"]
