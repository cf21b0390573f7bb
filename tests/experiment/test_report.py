"""The experiment report says when a comparison covers fewer seeds than its heading."""

from gan_detect.experiment.report import markdown


def _diff(n_seeds: int) -> dict:
    return {
        "AP": {
            "a": [1.0] * n_seeds,
            "b": [2.0] * n_seeds,
            "difference": {"point": 1.0, "low": 0.5, "high": 1.5},
        }
    }


def test_a_pair_with_a_first_seed_row_is_labelled_as_images_only() -> None:
    res = {
        "num_val_images": 10,
        "seeds": [0, 1, 2],
        "cpu": "test",
        "table": {"det": {"AP": {"mean": 1.0, "std": None}}},
        "comparisons": {
            "T": {"x → y": _diff(3), "x → carn": _diff(1), "x → two": _diff(2)},
        },
    }
    text = markdown(res, ["AP"], {"AP": "AP"}, lambda m: m)
    assert "| x → y | +1.00 [+0.50, +1.50]* |" in text
    assert "| x → carn (1 seed: interval over images only) | +1.00 [+0.50, +1.50]* |" in text
    assert "| x → two (2 seeds) |" in text
    assert "over 3 training seeds" in text
