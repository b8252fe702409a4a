"""nnscratch: a neural network from scratch, on any Array API backend.

Every forward and backward pass is written by hand against the Python Array API
standard, so one implementation trains on NumPy (CPU), CuPy (CUDA GPU), PyTorch
tensors and array-api-strict. Choose the backend with ``NNSCRATCH_BACKEND`` or
``nn.use_backend``.
"""

from __future__ import annotations

from . import augment, datasets, errors
from .activations import (
    ELU,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Step,
    Tanh,
    get_activation,
)
from .backend import BACKENDS, Backend, get_backend, synchronize, to_numpy, use_backend
from .callbacks import Callback, EarlyStopping, History, ProgressBar
from .checkpoint import Checkpoint, Run, resume
from .conv import CNN_TRAINING, AvgPool2D, Conv2D, MaxPool2D, cnn
from .data import MeanNormalizer, MinMaxScaler, StandardScaler, train_validation_split
from .errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    NNScratchError,
    NotDifferentiableError,
    ShapeError,
    StateError,
)
from .gradcheck import GradcheckResult, gradcheck
from .io import load, save
from .layers import Dense, Dropout, Flatten, Layer, Parameter
from .losses import (
    BinaryCrossEntropy,
    CategoricalCrossEntropy,
    Loss,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)
from .metrics import accuracy, confusion_matrix
from .model import Sequential, mlp
from .model_selection import CrossValidation, cross_validate
from .normalization import BatchNorm
from .optim import (
    SGD,
    Adam,
    AdamW,
    CosineDecay,
    ExponentialDecay,
    Optimizer,
    RMSprop,
    Schedule,
    StepDecay,
)
from .random import seed

__version__ = "0.1.0"


__all__ = [
    "BACKENDS", "Backend", "get_backend", "use_backend", "synchronize", "to_numpy", "seed",
    "Layer", "Parameter", "Dense", "Dropout", "Flatten", "Conv2D", "MaxPool2D", "AvgPool2D",
    "BatchNorm",
    "Identity", "Step", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "Softplus", "Softmax",
    "get_activation",
    "Loss", "MeanSquaredError", "BinaryCrossEntropy", "CategoricalCrossEntropy",
    "SoftmaxCrossEntropy",
    "Optimizer", "SGD", "RMSprop", "Adam", "AdamW",
    "Schedule", "StepDecay", "ExponentialDecay", "CosineDecay",
    "Sequential", "mlp", "cnn", "CNN_TRAINING", "cross_validate", "CrossValidation",
    "Callback", "History", "EarlyStopping", "ProgressBar",
    "MinMaxScaler", "StandardScaler", "MeanNormalizer", "train_validation_split",
    "accuracy", "confusion_matrix", "gradcheck", "GradcheckResult", "load", "save", "errors",
    "Checkpoint", "Run", "resume", "datasets", "augment",
    "NNScratchError", "BackendError", "ShapeError", "ConfigError", "DataError",
    "DivergenceError", "CheckpointError", "NotDifferentiableError", "StateError",
    "__version__",
]
