"""LogME and the k-NN leave-one-out accuracy against independent computations, and their known behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from scipy.spatial.distance import cdist

from harness.training import transferability


def closed_form_logme(x: np.ndarray, labels: np.ndarray) -> float:
    """The same model's log evidence per image written directly (posterior by a linear solve, log det by slogdet)
    and maximised over log alpha and log beta with scipy.optimize, averaged over classes."""
    n, d = x.shape

    def evidence(log_precisions: np.ndarray, t: np.ndarray) -> float:
        alpha, beta = np.exp(log_precisions)
        a = alpha * np.eye(d) + beta * x.T @ x
        m = beta * np.linalg.solve(a, x.T @ t)
        residual = t - x @ m
        logdet = np.linalg.slogdet(a)[1]
        value = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * residual @ residual
                 - alpha * m @ m - logdet) / 2  # fmt: skip
        return float(value / n)

    scores = []
    for k in np.unique(labels):
        t = (labels == k).astype(float)
        found = optimize.minimize(lambda p, t=t: -evidence(p, t), x0=np.zeros(2), method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-15, "maxiter": 20_000})  # fmt: skip
        assert found.success, found.message
        scores.append(-found.fun)
    return float(np.mean(scores))


@pytest.mark.parametrize(("n", "d", "classes"), [(60, 8, 2), (40, 25, 3), (400, 64, 4)])
def test_logme_equals_the_closed_form_evidence_maximised_by_scipy(n, d, classes):
    rng = np.random.default_rng(n * d)
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)) + 0.8 * np.eye(classes, d)[labels]
    assert transferability.logme(x, labels) == pytest.approx(closed_form_logme(x, labels), abs=1e-6)


def test_fewer_images_than_channels_give_a_finite_score_that_still_ranks():
    """Each class column can then be fitted exactly: the evidence's supremum lies where the noise vanishes, and
    the iteration stops there rather than overflowing."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 12)
    linear = np.eye(2, 30)[labels] * 3 + 0.01 * rng.normal(size=(12, 30))
    scores = [transferability.logme(x, labels) for x in (linear, rng.normal(size=(12, 30)))]
    assert all(np.isfinite(scores)) and scores[0] > scores[1]


def test_features_linear_in_the_labels_score_above_random_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    linear = np.eye(3)[labels] @ rng.normal(size=(3, 64)) + 0.01 * rng.normal(size=(300, 64))
    random = rng.normal(size=(300, 64))
    assert transferability.logme(linear, labels) > transferability.logme(random, labels) + 1.0


def test_a_spatial_map_is_pooled_before_scoring():
    rng = np.random.default_rng(1)
    maps, labels = rng.normal(size=(50, 4, 4, 16)), rng.integers(0, 2, 50)
    pooled = maps.mean(axis=(1, 2))
    assert transferability.logme(maps, labels) == pytest.approx(transferability.logme(pooled, labels), abs=1e-12)
    assert transferability.knn_accuracy(maps, labels) == transferability.knn_accuracy(pooled, labels)


def brute_force_knn(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out k-NN by cosine distance, one image at a time; ties go to the class of the nearest among them."""
    distances = cdist(x, x, metric="cosine")
    right = 0
    for i in range(len(x)):
        others = [j for j in np.argsort(distances[i], kind="stable") if j != i][:k]
        counts = np.bincount(labels[others], minlength=labels.max() + 1)
        tied = set(np.flatnonzero(counts == counts.max()))
        predicted = next(labels[j] for j in others if labels[j] in tied)
        right += predicted == labels[i]
    return right / len(x)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_knn_accuracy_equals_a_brute_force_leave_one_out(k):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 12)) + 0.7 * np.eye(3, 12)[labels]
    assert transferability.knn_accuracy(x, labels, k=k, block=32) == pytest.approx(brute_force_knn(x, labels, k))


def test_knn_accuracy_separates_clusters_and_is_chance_on_noise():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 200)
    clusters = rng.normal(size=(400, 32)) * 0.1 + np.where(labels[:, None] == 0, 1.0, -1.0)
    assert transferability.knn_accuracy(clusters, labels) == 1.0
    assert 0.4 < transferability.knn_accuracy(rng.normal(size=(400, 32)), labels) < 0.6


def test_too_few_images_or_mismatched_labels_are_refused():
    with pytest.raises(ValueError, match="at least two images"):
        transferability.logme(np.ones((1, 3)), [0])
    with pytest.raises(ValueError, match="5 feature rows but 4 labels"):
        transferability.knn_accuracy(np.ones((5, 3)), [0, 1, 0, 1])


def test_knn_accuracy_over_many_images_scores_a_seeded_sample_of_them():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 8)) + np.eye(2, 8)[labels]
    kept = np.sort(np.random.default_rng(0).choice(600, 200, replace=False))
    sampled = transferability.knn_accuracy(x, labels, max_images=200)
    assert (
        sampled
        == transferability.knn_accuracy(x[kept], labels[kept])
        == transferability.knn_accuracy(x, labels, max_images=200)
    )
