#!/usr/bin/env python3
"""Reference fixture for lam-lawm-train's CCA: scikit-learn's first canonical correlation.

Writes crates/lam-lawm-train/tests/fixtures/cca_sklearn.json with three cases of paired data
(latent-like X, n x 7, and action-like Y, n x 2 or n x 3) and the Pearson correlation of
the first pair of canonical components from sklearn.cross_decomposition.CCA.

    pip install scikit-learn numpy
    python3 tools/reference/make_cca_fixture.py
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn.cross_decomposition import CCA


def case(rng, n, p, q, noise):
    y = rng.normal(size=(n, q))
    mix = rng.normal(size=(q, p))
    x = y @ mix + noise * rng.normal(size=(n, p))
    # A column of x unrelated to y, and uneven scales.
    x[:, -1] = rng.normal(size=n) * 5.0
    x = x * rng.uniform(0.1, 3.0, size=p)
    cca = CCA(n_components=1, max_iter=5000, tol=1e-12)
    cca.fit(x, y)
    u, v = cca.transform(x, y)
    rho = float(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
    return {"x": x.round(6).tolist(), "y": y.round(6).tolist(), "rho": rho}


def main():
    rng = np.random.default_rng(7)
    cases = [case(rng, 120, 7, 2, 0.5), case(rng, 200, 7, 3, 3.0), case(rng, 80, 4, 2, 8.0)]
    # The inputs are rounded to 6 decimals; recompute sklearn's answer on the rounded data.
    for c in cases:
        x, y = np.array(c["x"]), np.array(c["y"])
        cca = CCA(n_components=1, max_iter=5000, tol=1e-12).fit(x, y)
        u, v = cca.transform(x, y)
        c["rho"] = float(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
    out = pathlib.Path(__file__).resolve().parents[2] / "crates/lam-lawm-train/tests/fixtures/cca_sklearn.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sklearn": sklearn.__version__, "cases": cases}))
    print(out, [round(c["rho"], 6) for c in cases])


if __name__ == "__main__":
    main()
