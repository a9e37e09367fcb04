import json

import pytest

from crabser.evaluation.metrics import compute_metrics
from crabser.evaluation.report import write_report


def test_metrics_match_hand_computed_values():
    metrics = compute_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert metrics["war"] == pytest.approx(0.6)
    assert metrics["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # F1: a = 0.5 (p 1/2, r 1/2), b = 0.8 (p 2/3, r 1), c = 0
    assert metrics["macro_f1"] == pytest.approx(1.3 / 3)
    assert metrics["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["confusion_normalised"][0] == pytest.approx([0.5, 0.5, 0.0])


def test_uar_ignores_classes_absent_from_the_truth():
    metrics = compute_metrics([0, 0, 1], [0, 0, 2], ["a", "b", "c"])
    assert metrics["uar"] == pytest.approx(0.5)  # recall a = 1, b = 0; c has no true example


def test_empty_evaluation_is_an_error():
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics([], [], ["a"])


def test_report_files_are_written(tmp_path):
    metrics = compute_metrics([0, 1, 1], [0, 1, 0], ["x", "y"])
    paths = write_report(metrics, tmp_path, prefix="test")
    assert json.loads(paths["metrics"].read_text())["war"] == pytest.approx(2 / 3)
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| y | 1.000 | 0.500 |" in paths["per_class_md"].read_text()


def test_balanced_bootstrap_draws_equal_classes_and_summarises_macro_f1():
    from crabser.evaluation.bootstrap import balanced_bootstrap

    y_true = [0] * 50 + [1] * 10
    perfect = balanced_bootstrap(y_true, y_true, n_subsets=20)
    assert (
        perfect["macro_f1_mean"] == 1.0
        and perfect["macro_f1_std"] == 0.0
        and perfect["per_class"] == 10
    )
    # every class-1 item is predicted 0, so every subset has F1(1) = 0 and F1(0) = 2/3: macro 1/3
    always_zero = balanced_bootstrap(y_true, [0] * 60, n_subsets=20)
    assert always_zero["macro_f1_mean"] == pytest.approx(1 / 3)
    # 5 of the 50 class-0 items wrong: subsets differ, the interval brackets the mean
    noisy = [1 if i < 5 else y for i, y in enumerate(y_true)]
    result = balanced_bootstrap(y_true, noisy, n_subsets=200, per_class=8, seed=1)
    assert (
        result["per_class"] == 8
        and result["macro_f1_min"] < result["macro_f1_mean"] < result["macro_f1_max"] == 1.0
    )
    assert result["macro_f1_ci"][0] <= result["macro_f1_mean"] <= result["macro_f1_ci"][1]
    assert balanced_bootstrap(y_true, noisy, n_subsets=50, seed=3) == balanced_bootstrap(
        y_true, noisy, n_subsets=50, seed=3
    )


def test_embedding_map_draws_at_most_max_points_and_scores_all(tmp_path, monkeypatch):
    import numpy as np
    import sklearn.manifold
    from sklearn.metrics import silhouette_score

    from crabser.evaluation.plots import plot_embeddings

    fitted = []

    class RecordingTSNE:  # stands in for sklearn's t-SNE: records how many points it maps
        def __init__(self, *args, **kwargs):
            pass

        def fit_transform(self, x):
            fitted.append(len(x))
            return x[:, :2]

    monkeypatch.setattr(sklearn.manifold, "TSNE", RecordingTSNE)
    rng = np.random.default_rng(1)
    labels = ["a", "b"] * 50
    taps = {
        "fused": rng.normal(size=(100, 4))
        + np.array([[3.0 * (k % 2), 0, 0, 0] for k in range(100)])
    }
    scores = plot_embeddings(taps, labels, tmp_path / "map.png", max_points=20)
    assert fitted == [20] and (tmp_path / "map.png").is_file()
    y = np.array([k % 2 for k in range(100)])
    assert scores["fused"] == pytest.approx(
        silhouette_score(taps["fused"], y, metric="cosine")
    )  # all 100, not the 20
    plot_embeddings(taps, labels, tmp_path / "all.png", max_points=None)
    assert fitted == [20, 100]


def test_macro_f1_counts_a_class_predicted_but_absent_from_the_truth():
    # truth has a and b only; one b is predicted as c (e.g. EmoDB speaker 08 has no disgust).
    # F1: a = 1, b = 2/3 (p 1, r 1/2), c = 0 (predicted once, never true): macro over a, b, c = 5/9.
    metrics = compute_metrics([0, 0, 1, 1], [0, 0, 1, 2], ["a", "b", "c"])
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["uar"] == pytest.approx((1 + 0.5) / 2)  # c has no true example: not in UAR
    assert metrics["weighted_f1"] == pytest.approx((2 * 1 + 2 * 2 / 3) / 4)


def test_balanced_bootstrap_counts_a_class_predicted_but_absent_from_the_truth():
    from crabser.evaluation.bootstrap import balanced_bootstrap

    # every subset holds the two items of each class; the one wrong prediction names class 2
    result = balanced_bootstrap([0, 0, 1, 1], [0, 0, 1, 2], n_subsets=3)
    assert result["macro_f1_mean"] == pytest.approx((1 + 2 / 3 + 0) / 3)
