import pytest
import torch

from crossmae.masking import gather_tokens, mask_counts, random_masking


@pytest.mark.parametrize("num_patches,mask_ratio,pred_ratio,visible,predicted", [
    (196, 0.75, 0.75, 49, 147), (196, 0.75, 0.25, 49, 49), (64, 0.75, 0.25, 16, 16), (256, 0.75, 0.15, 64, 39),
    (64, 0.5, 0.5, 32, 32)])
def test_counts(num_patches, mask_ratio, pred_ratio, visible, predicted):
    assert mask_counts(num_patches, mask_ratio, pred_ratio) == (visible, predicted)
    m = random_masking(3, num_patches, mask_ratio, pred_ratio, generator=torch.Generator().manual_seed(0))
    assert m.ids_keep.shape == (3, visible) and m.ids_pred.shape == (3, predicted)
    assert m.pred_mask.sum(1).tolist() == [predicted] * 3
    assert m.visible_mask.sum(1).tolist() == [visible] * 3


def test_visible_and_predicted_are_disjoint_and_predicted_are_masked():
    m = random_masking(16, 196, 0.75, 0.25, generator=torch.Generator().manual_seed(1))
    for i in range(16):
        keep, pred = set(m.ids_keep[i].tolist()), set(m.ids_pred[i].tolist())
        assert len(keep) == 49 and len(pred) == 49
        assert not keep & pred
        assert all(not m.visible_mask[i, j] for j in pred)
    assert (m.ids_pred.diff(dim=1) > 0).all()  # ascending, like the release's masked_select order
    # ids_restore inverts the permutation whose head is ids_keep
    assert torch.equal(m.ids_restore.argsort(1)[:, :49], m.ids_keep)


def test_masks_differ_per_sample_and_predicted_subset_is_uniform():
    m = random_masking(400, 64, 0.75, 0.25, generator=torch.Generator().manual_seed(2))
    assert len({tuple(r) for r in m.ids_pred.tolist()}) == 400
    freq = m.pred_mask.mean(0)  # each position predicted with probability 16/64
    assert (freq - 0.25).abs().max() < 0.1


@pytest.mark.parametrize("mask_ratio,pred_ratio", [(0.5, 0.75), (1.0, 0.5), (-0.1, 0.1), (0.75, 0.0), (0.75, 1.2)])
def test_bad_ratios_are_clear_errors(mask_ratio, pred_ratio):
    with pytest.raises(ValueError, match="ratio"):
        mask_counts(64, mask_ratio, pred_ratio)


def test_gather_tokens():
    x = torch.arange(2 * 5 * 3).reshape(2, 5, 3)
    ids = torch.tensor([[4, 0], [1, 1]])
    assert torch.equal(gather_tokens(x, ids), torch.stack([x[0, [4, 0]], x[1, [1, 1]]]))
