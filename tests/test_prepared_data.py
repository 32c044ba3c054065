"""A prepared dataset file says what it holds, and a run checks it against its spec (issue #22, class 2).

Before, `dataset: cifar10` with `data_file:` pointing at a prepared digits file ran on digits while the records
said cifar10.  A prepared file now records its dataset's facts (name, split sizes, sample shape, classes); the
run refuses, in one line naming the file, a file of another dataset than its spec's, a file whose tensors are
not what it records, and one whose name does not fit its data.
"""

from __future__ import annotations

import json

import pytest
import torch

from spfl import cli
from spfl.simulator.data import PREPARED_FORMAT, DatasetError, load_prepared, prepare_dataset


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    return prepare_dataset("digits", "unused", tmp_path_factory.mktemp("data") / "digits.pt")


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_a_prepared_file_records_what_it_holds(digits_file):
    payload = torch.load(digits_file, weights_only=True)
    assert payload["format"] == PREPARED_FORMAT
    assert payload["facts"] == {"name": "digits", "train_size": 1437, "test_size": 360, "input_shape": [1, 8, 8],
                                "num_classes": 10}
    assert load_prepared(digits_file, "digits").name == "digits"


def test_a_run_refuses_a_prepared_file_of_another_dataset(digits_file, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dataset": "cifar10", "model": "mlp", "num_devices": 4, "rounds": 1,
                                "partition": "iid", "data_file": str(digits_file)}))
    status = cli.main(["run", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err == (f"spfl run: error: prepared dataset {digits_file} holds digits, but the run spec's dataset is "
                   "cifar10: allowed a file prepared from cifar10 (spfl prepare cifar10 --out FILE)\n")
    assert not (tmp_path / "out").exists()


def rewritten(digits_file, tmp_path, change) -> str:
    payload = torch.load(digits_file, weights_only=True)
    change(payload)
    path = tmp_path / "changed.pt"
    torch.save(payload, path)
    return str(path)


def refused(path, dataset=None) -> str:
    with pytest.raises(DatasetError) as caught:
        load_prepared(path, dataset)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_file_renamed_to_another_dataset_is_refused_by_its_data(digits_file, tmp_path):
    def rename(payload):
        payload["name"] = "cifar10"
        payload["facts"]["name"] = "cifar10"

    path = rewritten(digits_file, tmp_path, rename)
    assert refused(path, "cifar10") == (f"prepared dataset {path} says it holds cifar10, but its data has input_shape "
                                        "[1, 8, 8] (not cifar10's); delete it and prepare it again")


def test_a_file_whose_tensors_are_not_what_it_records_is_refused(digits_file, tmp_path):
    def cut(payload):
        payload["train_x"], payload["train_y"] = payload["train_x"][:100], payload["train_y"][:100]

    path = rewritten(digits_file, tmp_path, cut)
    assert refused(path) == (f"prepared dataset {path} does not hold what it records (train_size differ); delete it "
                             "and prepare it again")


def test_a_digits_file_of_the_wrong_size_is_refused(digits_file, tmp_path):
    def cut(payload):
        payload["train_x"], payload["train_y"] = payload["train_x"][:100], payload["train_y"][:100]
        payload["facts"]["train_size"] = 100

    path = rewritten(digits_file, tmp_path, cut)
    assert refused(path, "digits") == (f"prepared dataset {path} says it holds digits, but its data has train_size "
                                       "100 (not digits's); delete it and prepare it again")


def test_a_file_of_an_older_format_is_refused_with_what_to_do(digits_file, tmp_path):
    def older(payload):
        payload["format"] = "spfl-dataset-v1"
        del payload["facts"]

    path = rewritten(digits_file, tmp_path, older)
    assert refused(path) == (f"prepared dataset {path} has format 'spfl-dataset-v1', expected '{PREPARED_FORMAT}'; "
                             "delete it and prepare it again")
