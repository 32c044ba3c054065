"""The datasets a run can use: one row of facts per dataset, declared once.

Settings are checked against a row without loading any data (the training-set size bounds the devices,
``model: auto`` picks the row's model), a prepared data file against its dataset's row, and the reports
take the test-set size from it.  Each row's loader is in :mod:`spfl.simulator.data`, registered under the
same name; a test loads every dataset and compares it with its row.  A new dataset is a row here and a
loader there.  Torch-free, like the rest of the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from spfl.vocabulary import MODELS


@dataclass(frozen=True)
class DatasetFacts:
    """What one dataset is: its samples, its splits, and the models a run may train on it."""

    name: str  # the value of the run setting `dataset`
    label: str  # how prose names it
    about: str  # what it is and where it comes from, for the setting's help
    input_shape: tuple[int, int, int]  # (C, H, W) of one sample
    num_classes: int
    train_size: int  # samples in the training split
    test_size: int  # samples in the test split
    default_model: str  # the model `model: auto` picks
    models: tuple[str, ...]  # the models allowed on it (a model for larger images may not fit its samples)
    # A prepared file may hold fewer samples than the splits' sizes: the loader reads any archive in the
    # dataset's format (the tests write tiny ones), while a generated split is always whole.
    smaller_allowed: bool = False


DATASET_ROWS: tuple[DatasetFacts, ...] = (
    DatasetFacts("digits", "digits", "offline scikit-learn digits", input_shape=(1, 8, 8), num_classes=10,
                 train_size=1437, test_size=360, default_model="mlp", models=("mlp", "cnn")),
    DatasetFacts("cifar10", "CIFAR-10", "CIFAR-10 (torchvision)", input_shape=(3, 32, 32), num_classes=10,
                 train_size=50_000, test_size=10_000, default_model="cifar_cnn", models=MODELS, smaller_allowed=True),
)
DATASET = {row.name: row for row in DATASET_ROWS}
DATASETS = tuple(DATASET)  # the dataset names, the choices of the setting `dataset`
