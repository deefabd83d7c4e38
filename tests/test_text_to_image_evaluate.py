"""The measures of model_cards.image_diffusion (the text-to-image model card's figures),
each on a case with a known answer."""

from __future__ import annotations

import pytest
import torch

from studio_imagedata.images import ImageData
from model_cards.image_diffusion import (Judge, candidates_for, distribution_scores, hue_of_ink, judge_scores,
                                             nearest_colour, nearest_training_images)


def solid(rgb: tuple[float, float, float], size: int = 8) -> torch.Tensor:
    """An image in [-1, 1]: a coloured square on white."""
    image = torch.ones(3, size, size)
    image[:, 2:6, 2:6] = torch.tensor(rgb)[:, None, None] * 2 - 1
    return image


@pytest.mark.parametrize("colour, rgb", [("red", (0.9, 0.1, 0.1)), ("green", (0.1, 0.8, 0.2)),
                                         ("blue", (0.1, 0.3, 0.9)), ("yellow", (0.95, 0.85, 0.1))])
def test_the_hue_of_the_ink_names_its_colour(colour, rgb):
    assert nearest_colour(hue_of_ink(solid(rgb))) == colour


def test_a_grey_image_has_no_hue():
    assert hue_of_ink(solid((0.5, 0.5, 0.5))) is None


def test_candidates_put_the_true_name_first_and_never_again():
    truth = torch.tensor([0, 5, 9])
    rows = candidates_for(truth, total=10, count=10)
    assert rows[:, 0].tolist() == [0, 5, 9]
    for t, row in zip(truth.tolist(), rows):
        assert sorted(row.tolist()) == list(range(10))  # with count == total: every name once
        assert row.tolist().count(t) == 1


class FixedJudge(Judge):
    """A judge whose answers are given: name logits and group logits per image."""

    def __init__(self, names, groups):
        super().__init__(names.shape[1], groups.shape[1])
        self.answers = names, groups

    def forward(self, x):
        return self.answers


def test_retrieval_counts_the_rank_of_the_true_name_among_the_candidates():
    names = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6, 7],    # true name 0 ranks first
                          [0.0, 1, 2, 3, 4, 5, 6, 7],    # true name 0 ranks last of 8
                          [5.0, 9, 8, 7, 6, 0, 0, 0]])   # true name 0 ranks fifth
    groups = torch.tensor([[1.0, 0], [0.0, 1], [1.0, 0]])
    candidates = torch.arange(8).repeat(3, 1)
    scores = judge_scores(FixedJudge(names, groups), torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.long),
                          torch.tensor([0, 0, 1]), candidates)
    assert scores["name_top1"] == round(1 / 3, 3)
    assert scores["name_top5"] == round(2 / 3, 3)
    assert scores["group_top1"] == round(1 / 3, 3)
    assert scores["group_top5"] == 1.0


def test_fid_and_kid_are_zero_for_the_same_set_and_grow_with_a_shift():
    torch.manual_seed(0)
    judge = Judge(4, 2).eval()
    real = torch.rand(64, 3, 16, 16) * 2 - 1
    same = distribution_scores(judge, real, real)
    shifted = distribution_scores(judge, real, real * 0.2 + 0.7)  # faint, nearly white
    # an untrained judge's features are small: what matters is the ratio
    assert abs(same["fid_judge"]) < 1e-2 * shifted["fid_judge"]
    assert abs(same["kid_judge"]) < 1e-2 * shifted["kid_judge"]


def test_the_nearest_training_image_is_the_caption_sharing_most_words():
    images = torch.arange(3.0)[:, None, None, None].expand(3, 3, 2, 2)
    train = ImageData(images, torch.zeros(3, dtype=torch.long), [], "test",
                      ["red heart", "cat face", "grinning cat face with smiling eyes"])
    picked = nearest_training_images(["cat face with tears", "heart", "unrelated"], train)
    assert picked[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0]  # ties and no overlap: the first caption
