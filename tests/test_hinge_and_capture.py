import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepmargin import MulticlassHingeLoss, multiclass_hinge_loss
from deepmargin.capture import ActivationCapture, layer_table, list_layers


@pytest.mark.parametrize("aggregation", ["sum", "max"])
def test_hinge_matches_loops_and_torch(aggregation):
    torch.manual_seed(0)
    logits, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 4, (9,))
    got = multiclass_hinge_loss(logits, y, margin=0.7, aggregation=aggregation, reduction="none")
    for n in range(9):
        terms = [max(0.0, 0.7 - float(logits[n, y[n]] - logits[n, i])) for i in range(4) if i != y[n]]
        assert abs(got[n].item() - (sum(terms) if aggregation == "sum" else max(terms))) < 1e-12
    if aggregation == "sum":  # torch's MultiMarginLoss averages over the C classes
        ref = F.multi_margin_loss(logits, y, margin=0.7, reduction="none") * 4
        torch.testing.assert_close(got, ref)


def test_hinge_cross_entropy_term_and_module():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    crit = MulticlassHingeLoss(1.0, ce_weight=0.1)
    expected = multiclass_hinge_loss(logits, y) + 0.1 * F.cross_entropy(logits, y)
    torch.testing.assert_close(crit(logits, y), expected)
    with pytest.raises(ValueError, match="'margin' parameter of multiclass_hinge_loss must be a number > 0"):
        multiclass_hinge_loss(logits, y, margin=0.0)


def test_list_layers_and_table():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(8, 3)))
    assert list_layers(net) == ["input", "0", "1", "2", "2.0", "2.1"]
    assert list_layers(net, leaves_only=True) == ["input", "0", "1", "2.0", "2.1"]
    table = {r["name"]: r for r in layer_table(net, torch.zeros(1, 1, 4, 4))}
    assert table["0"]["shape"] == (2, 2, 2) and table["2.1"]["shape"] == (3,)
    assert table["1"]["type"] == "ReLU"


def test_capture_rejects_shared_modules_and_strings():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    with pytest.raises(ValueError, match="called more than once"):
        with ActivationCapture(net, ["1"]):
            net(torch.randn(3, 2))
    with pytest.raises(TypeError, match="sequence of layer names"):
        ActivationCapture(net, "1")
