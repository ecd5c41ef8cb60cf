"""How the report names the network of an attack run: variants of one class (random or pretrained trunk) apart."""

import pytest

from mlattack.report.collect import network_name
from mlattack.report.tables import network_label


def params(network: str, identity: str, uri: str = "models:/x/1", dataset: str = "synthetic") -> dict:
    return {"network": network, "dataset": dataset, "model_identity": identity, "model_uri": uri}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (params("mlgcn", "mlgcn-synthetic/3"), "mlgcn"),  # the default registry name: the class
        (params("mlgcn", "mlgcn-effnet-synthetic/1"), "mlgcn-effnet"),  # a variant gets its own rows
        (params("query2label", "query2label-effnet-synthetic/2"), "query2label-effnet"),
        (params("mlgcn", "my-model-synthetic/1"), "mlgcn"),  # a name that is not <class>-...: the class
        (params("mlgcn", "mlgcn-effnet-voc2007/1"), "mlgcn"),  # registered for another dataset
        (params("mlgcn", "/tmp/run/last.ckpt", uri="/tmp/run/last.ckpt"), "mlgcn"),  # a checkpoint file
        ({"network": "mlliw"}, "mlliw"),  # runs logged before model identities
    ],
)
def test_network_name_is_the_class_or_its_registered_variant(run, expected):
    assert network_name(run) == expected


def test_network_label_reads_the_family_and_keeps_the_variant():
    assert network_label("mlgcn") == "ML-GCN"
    assert network_label("query2label-effnet") == "Query2Label (effnet)"
    assert network_label("vit") == "ViT"
    assert network_label("linearcolournet") == "linearcolournet"
    assert network_label("my-net") == "my-net"
