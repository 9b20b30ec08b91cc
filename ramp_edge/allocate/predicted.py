"""A measurement-free baseline: the knapsack over a per-tensor error table predicted by regression.

The knapsack needs an error per (tensor, candidate type); measuring it costs about params x
types x calibration tokens. `ErrorModel` predicts it instead, from the same per-tensor
observation the RAMP policy sees (11-dim embedding, role, source bits, K-quant legality), by
a ridge regression fitted on the measured, KLD-calibrated tables of the training families:

    log err(tensor, type) ~ [x, 1] (x) [1, b, b^2, d, d^2, [b > s]]  +  onehot(type)

with x the tensor's features and role one-hot, b the candidate's bits per weight, s the source
type's and d = b - s. Keeping the source type is exact and free (error 0), as in the measured
table. This is the issue 13 baseline (c): it answers "does the policy know more than a
regression on the same inputs?". Pure numpy; a fitted model is a few kB of JSON-able floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramp_edge.allocate.sensitivity import SensitivityTable, TensorCosts
from ramp_edge.errors import ConfigError
from ramp_edge.quant.catalogue import CATALOGUE

_TYPES = tuple(t for t, q in CATALOGUE.items() if q.allocatable)
_FLOOR = 1e-12


def _design(x: np.ndarray, b: np.ndarray, s: np.ndarray, types: Sequence[str]) -> np.ndarray:
    """Rows of the regression: one per (tensor, candidate)."""
    d = b - s
    basis = np.stack([np.ones_like(b), b, b**2, d, d**2, (b > s + 1e-6).astype(np.float64)], 1)
    xs = np.concatenate([x, np.ones((len(x), 1))], 1)
    inter = (xs[:, :, None] * basis[:, None, :]).reshape(len(x), -1)
    onehot = np.zeros((len(x), len(_TYPES)))
    for i, t in enumerate(types):
        onehot[i, _TYPES.index(t)] = 1.0
    return np.concatenate([inter, onehot], 1)


def _rows(table: SensitivityTable, obs: np.ndarray, source_types: Sequence[str]):
    x, b, s, types, errs, where = [], [], [], [], [], []
    for i, t in enumerate(table.tensors):
        for j, (q, nbytes, err) in enumerate(t.options):
            x.append(obs[i])
            b.append(nbytes * 8 / t.n_params)
            s.append(CATALOGUE[source_types[i]].bits_per_weight)
            types.append(q)
            errs.append(err)
            where.append((i, j))
    return (
        np.asarray(x, np.float64),
        np.asarray(b, np.float64),
        np.asarray(s, np.float64),
        types,
        np.asarray(errs, np.float64),
        where,
    )


@dataclass(frozen=True, slots=True)
class ErrorModel:
    """Ridge regression of log per-tensor error (see the module doc)."""

    coef: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    train_models: tuple[str, ...]
    r2: float  # on the training rows (log space, free options excluded)

    @classmethod
    def fit(
        cls,
        tables: Sequence[SensitivityTable],
        observations: Sequence[np.ndarray],
        source_types: Sequence[Sequence[str]],
        ridge: float = 1.0,
    ) -> ErrorModel:
        """Fit on measured tables; `observations[k]` is (n_tensors, d) in table order,
        `source_types[k]` the tensors' types in the source file (`source_types`)."""
        xs, ys = [], []
        for table, obs, sb in zip(tables, observations, source_types, strict=True):
            x, b, s, types, errs, _ = _rows(table, obs, sb)
            keep = errs > 0  # the source type's own option is exactly 0; not a regression target
            xs.append(
                _design(
                    x[keep], b[keep], s[keep], [t for t, k in zip(types, keep, strict=True) if k]
                )
            )
            ys.append(np.log(np.maximum(errs[keep], _FLOOR)))
        X, y = np.concatenate(xs), np.concatenate(ys)
        mean, std = X.mean(0), X.std(0)
        std[std < 1e-9] = 1.0
        mean[-len(_TYPES) :] = 0.0  # leave the type one-hot unscaled
        std[-len(_TYPES) :] = 1.0
        Z = (X - mean) / std
        A = Z.T @ Z + ridge * np.eye(Z.shape[1])
        coef = np.linalg.solve(A, Z.T @ (y - y.mean()))
        coef = np.concatenate([coef, [y.mean()]])
        pred = Z @ coef[:-1] + coef[-1]
        r2 = 1.0 - float(((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30))
        return cls(coef, mean, std, tuple(t.model_id for t in tables), r2)

    def to_dict(self) -> dict:
        """JSON-able (a policy's metadata carries its prior's regression)."""
        return {
            "coef": [float(v) for v in self.coef],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "types": list(_TYPES),
            "train_models": list(self.train_models),
            "r2": float(self.r2),
        }

    @classmethod
    def from_dict(cls, doc: dict) -> ErrorModel:
        if list(doc.get("types", [])) != list(_TYPES):
            raise ConfigError(
                "the error regression was fitted with another candidate type list "
                f"({len(doc.get('types', []))} types; this version has {len(_TYPES)})"
            )
        return cls(
            np.asarray(doc["coef"], np.float64),
            np.asarray(doc["mean"], np.float64),
            np.asarray(doc["std"], np.float64),
            tuple(doc.get("train_models", ())),
            float(doc.get("r2", float("nan"))),
        )

    def predict_table(
        self, table: SensitivityTable, obs: np.ndarray, source_types: Sequence[str]
    ) -> SensitivityTable:
        """`table` (candidates and bytes; its errors are ignored) with predicted errors."""
        x, b, s, types, _, where = _rows(table, obs, source_types)
        Z = (_design(x, b, s, types) - self.mean) / self.std
        pred = np.exp(Z @ self.coef[:-1] + self.coef[-1])
        errs: dict[tuple[int, int], float] = {}
        for (i, j), p, q in zip(where, pred, types, strict=True):
            errs[(i, j)] = 0.0 if q == source_types[i] else float(p)
        rows = []
        for i, t in enumerate(table.tensors):
            opts = tuple((q, nbytes, errs[(i, j)]) for j, (q, nbytes, _) in enumerate(t.options))
            rows.append(TensorCosts(t.name, t.shape, t.n_params, opts))
        return SensitivityTable(table.model_id, tuple(rows), table.fixed_bytes)


def source_types(source, table: SensitivityTable) -> list[str]:
    """Each tensor's type in the source file, in table order."""
    specs = {s.name: s for s in source.specs}
    return [specs[t.name].source_type for t in table.tensors]
