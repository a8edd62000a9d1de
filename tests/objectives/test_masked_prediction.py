import torch
import torch.nn.functional as F

from speechlm.models.speech_ssl import MaskedPredictionOutput
from speechlm.objectives.masked_prediction import masked_prediction_loss


def test_loss_is_cross_entropy_over_masked_frames_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 2, 7, requires_grad=True)
    targets = torch.randint(0, 7, (2, 5, 2))
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    out = masked_prediction_loss(MaskedPredictionOutput(logits, targets, mask, torch.tensor([5, 5])))
    ref = F.cross_entropy(logits[mask].reshape(-1, 7), targets[mask].reshape(-1))
    torch.testing.assert_close(out.loss, ref)
    assert out.num_tokens == 4
    expected_acc = (logits[mask].argmax(-1) == targets[mask]).float().mean().item()
    assert out.metrics["masked_acc"] == expected_acc
    out.loss.backward()
    assert logits.grad[~mask].abs().sum() == 0  # unmasked frames get no gradient


def test_no_masked_frames_gives_a_zero_loss_with_a_graph():
    logits = torch.randn(1, 3, 1, 4, requires_grad=True)
    out = masked_prediction_loss(MaskedPredictionOutput(logits, torch.zeros(1, 3, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool), torch.tensor([3])))
    assert out.loss.item() == 0 and out.num_tokens == 0
    out.loss.backward()
