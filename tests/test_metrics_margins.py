import math

import pytest
import torch
from torch import nn

from deepmargin.metrics import linearized_margins, summarize_margins


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_input_margin_of_a_linear_model_is_the_exact_distance(p):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (40,))
    m = linearized_margins(model, x, y, ["input"], norm=p, batch_size=16)["input"]
    W, b = model[0].weight.detach(), model[0].bias.detach()
    q = {1: math.inf, 2: 2, math.inf: 1}[p]
    for n in range(40):
        best = math.inf
        for i in range(5):
            if i == y[n]:
                continue
            w = W[y[n]] - W[i]
            best = min(best, float(w @ x[n] + b[y[n]] - b[i]) / torch.linalg.vector_norm(w, ord=q).item())
        assert abs(m[n].item() - best) < 1e-9
    # negative exactly for misclassified samples
    assert torch.equal(m < 0, model(x).argmax(1) != y)


def test_hidden_layers_modes_and_summary():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    a = linearized_margins(model, x, y, ["input", "1"], batch_size=7)
    b = linearized_margins(model, x, y, ["input", "1"], batch_size=30)
    assert model.training and model[2].training  # mode restored
    torch.testing.assert_close(a["1"], b["1"])  # eval mode: dropout off, batching irrelevant
    s = summarize_margins(a["input"])
    assert s["n"] == 30 and s["min"] <= s["q25"] <= s["median"] <= s["q75"] <= s["max"]
    assert s["frac_negative"] == pytest.approx(float((a["input"] < 0).float().mean()))
    with pytest.raises(ValueError, match="'batch_size' parameter of linearized_margins"):
        linearized_margins(model, x, y, ["input"], batch_size=0)
