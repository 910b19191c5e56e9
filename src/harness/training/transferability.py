"""How well frozen features will transfer, estimated before training: LogME and a k-nearest-neighbour accuracy.

Both read features a frozen job already computes, pooled (a global average over space), so their cost does not
depend on the cut's size:

- **LogME** (You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021): for each class, the log evidence of a Bayesian linear model predicting its one-hot
  column from the features (prior precision alpha on the weights, noise precision beta), maximised over
  alpha and beta by MacKay's fixed-point iteration, divided by the number of images; averaged over classes.
  Higher is better. The paper takes one SVD of the features; here the eigenvalues of F'F, accumulated a block of
  rows at a time, give the same squared singular values without holding F. The iteration runs to convergence
  (the paper stops at 1% change) so that it is the maximum, which `tests/test_transferability.py` checks against
  the closed form maximised with `scipy.optimize`.
- **k-NN leave-one-out accuracy**: each training image classified by the majority of its k nearest other
  images (cosine similarity of the features), the fraction right.
"""

from __future__ import annotations

import numpy as np

LOGME_TOL = 1e-12  # relative change of alpha / beta at which the fixed point has converged
LOGME_MAX_ITER = 1000
# With fewer images than channels a class column can be fitted exactly, and the evidence then grows towards its
# supremum as the noise precision grows without bound: the iteration stops where alpha / beta falls below this
# fraction of the largest squared singular value (the evidence is then within rounding of the supremum).
RATIO_FLOOR = 1e-12
KNN_K = 10
# the vote compares every pair of images, so beyond this many a seeded sample of them is scored (10,000 images of
# 1,280 channels: a few seconds on two cores)
KNN_MAX_IMAGES = 10_000


def _pooled(features: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Rows of the features as (images, channels) float64, a spatial map pooled by its global average."""
    x = np.asarray(features[rows], dtype=np.float64)
    return x.reshape(len(x), -1, x.shape[-1]).mean(axis=1) if x.ndim > 2 else x


def _checked(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The labels as integers, after checking that they match the features (which stay as they are: a memory-mapped
    cache entry is read a block of rows at a time)."""
    y = np.asarray(labels).astype(int).ravel()
    if np.ndim(features) < 2 or len(features) < 2:
        raise ValueError(f"features of shape {np.shape(features)}: need at least two images")
    if len(y) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(y)} labels")
    return y


def _evidence(sigma: np.ndarray, z2: np.ndarray, outside: float, n: int, d: int) -> tuple[float, float, float]:
    """(log evidence / n, alpha, beta) of one target column maximised over alpha and beta (MacKay's fixed point).

    sigma: the squared singular values of the features; z2: the squared projections of the target on the left
    singular vectors; outside: the target's squared norm outside their span."""
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_ITER):
        t = alpha / beta
        gamma = float(np.sum(sigma / (sigma + t)))
        m2 = float(np.sum(sigma * z2 / (sigma + t) ** 2))  # |m|^2, the posterior mean's squared norm
        res2 = float(np.sum(z2 * (t / (sigma + t)) ** 2)) + outside  # |y - F m|^2
        new_alpha = gamma / max(m2, 1e-300)
        new_beta = (n - gamma) / max(res2, 1e-300)
        if not new_alpha / new_beta > RATIO_FLOOR * sigma.max():  # noise vanishing: the supremum is at the edge
            break
        done = abs(new_alpha - alpha) <= LOGME_TOL * alpha and abs(new_beta - beta) <= LOGME_TOL * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    t = alpha / beta
    m2 = float(np.sum(sigma * z2 / (sigma + t) ** 2))
    res2 = float(np.sum(z2 * (t / (sigma + t)) ** 2)) + outside
    logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * np.log(alpha)
    evidence = (
        n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
        - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2
    )  # fmt: skip
    return float(evidence / n), alpha, beta


def logme(features: np.ndarray, labels: np.ndarray, block: int = 4096) -> float:
    """LogME of the features for the labels (integer classes): the mean over classes of the maximised log
    evidence per image. Higher means the features explain the labels better with a linear model."""
    y = _checked(features, labels)
    classes = np.unique(y)
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)
    n, d = len(y), int(np.shape(features)[-1])
    gram, projected = np.zeros((d, d)), np.zeros((d, len(classes)))
    for start in range(0, n, block):  # F'F and F'Y a block of rows at a time: memory does not grow with n
        x = _pooled(features, slice(start, start + block))
        gram += x.T @ x
        projected += x.T @ onehot[start : start + block]
    sigma, v = np.linalg.eigh(gram)  # F'F = V diag(sigma) V': sigma are F's squared singular values
    keep = sigma > sigma.max() * d * np.finfo(np.float64).eps
    sigma, v = sigma[keep], v[:, keep]
    z = (v.T @ projected) / np.sqrt(sigma)[:, None]  # U'y = diag(1/s) V'F'y, for each class column
    scores = []
    for i in range(len(classes)):
        z2 = z[:, i] ** 2
        outside = max(float(onehot[:, i].sum() - z2.sum()), 0.0)  # |y|^2 - |U'y|^2, y one-hot: |y|^2 = count
        scores.append(_evidence(sigma, z2, outside, n, d)[0])
    return float(np.mean(scores))


def knn_accuracy(
    features: np.ndarray, labels: np.ndarray, k: int = KNN_K, block: int = 1024, max_images: int = KNN_MAX_IMAGES
) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (cosine similarity) over the training features: each
    image's class predicted from its k most similar other images (ties: the class of the nearest among them).
    Over `max_images`, a seeded sample of that many images stands for them all."""
    y = _checked(features, labels)
    kept = np.arange(len(y))
    if len(y) > max_images:
        kept = np.sort(np.random.default_rng(0).choice(len(y), max_images, replace=False))
    x, y = _pooled(features, kept), y[kept]
    k = min(k, len(x) - 1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes = int(y.max()) + 1
    right = 0
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # leave the image itself out
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, nearest, axis=1), axis=1)
        nearest = np.take_along_axis(nearest, order, axis=1)  # most similar first
        votes = np.zeros((len(sims), classes))
        # a vote of 1 each, plus a tie-breaker that favours nearer neighbours (less than one vote in all)
        weight = 1.0 + 0.5 ** np.arange(1, k + 1) / 2
        np.add.at(votes, (rows[:, None], y[nearest]), weight)
        right += int(np.sum(votes.argmax(axis=1) == y[start : start + block]))
    return right / len(x)


def estimates(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Both estimates of one feature set, as the metrics a frozen run logs."""
    return {"logme": logme(features, labels), "knn_loo_acc": knn_accuracy(features, labels)}
