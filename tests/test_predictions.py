"""What `predict` prints for each image: its k most probable classes, with their own probabilities."""

from __future__ import annotations

import numpy as np

from transferlab.predictions import top


def test_top_k_gives_each_image_its_most_probable_classes_with_their_own_probabilities() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    assert top(probs, ["a", "b", "c"], 2) == [
        [{"label": "b", "prob": 0.7}, {"label": "c", "prob": 0.2}],
        [{"label": "a", "prob": 0.5}, {"label": "b", "prob": 0.25}],  # a tie goes to the lower class index
    ]
    assert [len(each) for each in top(probs, ["a", "b", "c"], 10)] == [3, 3]  # never more than the classes
