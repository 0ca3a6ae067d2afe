"""How far one shard set's frames sit from another's, in the second set's standardised units.

The feasibility projection (`lam plan eval --feasible`) looks up the frames of the world
model's video nearest each planned frame; this tells whether a robot's frames have near
neighbours in that video at all. Prints each channel's mean and std of the query set in the
reference set's units, and the median distance to the 1st and 8th nearest reference frame,
from the reference set itself and from the query set, over every channel and over the channels whose
query mean lies within 1 reference std of the reference mean and whose query std is within a
factor 3 of the reference std (what `lam plan eval --feasible-domain` keeps); then how far
the query set's frame changes lie from the hull of the changes of their 8 / 16 nearest
reference frames (what `--feasible-target change` projects; changes in the reference's change
stds, on the channels whose change spread matches within 2x).

    .venv/bin/python tools/shard_gap.py REFERENCE_SHARDS QUERY_SHARDS
"""

import glob
import json
import struct
import sys

import numpy as np


def clips(folder):
    """Every clip of a lam shard folder, tokens pooled per frame, `[C, T, D]`."""
    out = []
    for path in sorted(glob.glob(folder + "/shard-*.safetensors")):
        raw = open(path, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + n])
        for name, v in header.items():
            if name == "__metadata__" or v["dtype"] != "F32" or len(v["shape"]) != 4:
                continue
            s, e = v["data_offsets"]
            a = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=np.float32)
            out.append(a.reshape(v["shape"]))
    if not out:
        sys.exit(f"{folder}: no shard-*.safetensors with clips")
    return np.concatenate(out).mean(2)


def frames(folder):
    """Every distinct pooled frame of a lam shard folder, `[M, D]`."""
    x = clips(folder)
    return np.unique(x.reshape(-1, x.shape[-1]), axis=0)


def transitions(folder):
    """Pooled frames and what each transition changed (next minus frame), `[M, D]` each."""
    x = clips(folder)
    d = x.shape[-1]
    return x[:, :-1].reshape(-1, d), (x[:, 1:] - x[:, :-1]).reshape(-1, d)


def nearest_in_hull(points, z, iterations=300):
    """The point of the convex hull of `points` nearest `z` (pairwise Frank-Wolfe)."""
    gram, b = points @ points.T, points @ z
    w = np.zeros(len(points))
    w[np.argmin(np.diag(gram) - 2 * b)] = 1.0
    for _ in range(iterations):
        g = gram @ w - b
        toward = np.argmin(g)
        held = np.flatnonzero(w > 0)
        away = held[np.argmax(g[held])]
        gap = g[away] - g[toward]
        if toward == away or gap <= 1e-9:
            break
        curve = gram[toward, toward] - 2 * gram[toward, away] + gram[away, away]
        step = min(gap / curve, w[away]) if curve > 1e-12 else w[away]
        w[toward] += step
        w[away] -= step
    return points.T @ w


def nearest(q, s, skip_self):
    d = ((q[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    if skip_self:
        d[d == 0] = np.inf
    return np.sqrt(np.sort(d, 1)[:, :8])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ref, query = frames(sys.argv[1]), frames(sys.argv[2])
    ref_t, ref_c = transitions(sys.argv[1])
    query_t, query_c = transitions(sys.argv[2])
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    r, q = (ref - mu) / sd, (query - mu) / sd
    print(f"reference {r.shape}, query {q.shape}")
    np.set_printoptions(precision=2, suppress=True, linewidth=120)
    print("query channel means in reference units:", q.mean(0))
    print("query channel stds in reference units: ", q.std(0))
    qs = q.std(0)
    keep = (np.abs(q.mean(0)) <= 1.0) & (qs >= 1 / 3) & (qs <= 3.0)
    print("channels kept by the domain match:", np.flatnonzero(keep))
    for label, cols in [("all channels", slice(None)), ("matched channels", keep)]:
        rng = np.random.default_rng(0)
        for name, pts, skip in [("reference", r, True), ("query", q, False)]:
            pick = pts[rng.choice(len(pts), min(300, len(pts)), replace=False)]
            d = nearest(pick[:, cols], r[:, cols], skip)
            print(
                f"{label}: {name} -> reference: median distance to the 1st / 8th nearest "
                f"frame {np.median(d[:, 0]):.3f} / {np.median(d[:, 7]):.3f}"
            )
    # What `--feasible-target change` projects: channels matched as above whose change spread
    # in the query set is within 2x the reference's.
    ratio = query_c.std(0) / (ref_c.std(0) + 1e-9)
    live = keep & (ratio <= 2.0) & (ratio >= 0.5)
    print("channels whose changes are projected:", np.flatnonzero(live))
    rt, qt = ((ref_t - mu) / sd)[:, keep], ((query_t - mu) / sd)[:, keep]
    scale = ref_c.std(0)[live] + 1e-9
    rng = np.random.default_rng(0)
    for k in (8, 16):
        moved = []
        for i in rng.choice(len(qt), min(400, len(qt)), replace=False):
            near = np.argsort(((rt - qt[i]) ** 2).sum(1))[:k]
            z = query_c[i, live] / scale
            p = nearest_in_hull(ref_c[near][:, live] / scale, z)
            moved.append(np.linalg.norm(p - z) / max(np.linalg.norm(z), 1e-6))
        print(
            f"query changes moved onto the hull of their {k} nearest reference frames' "
            f"changes (share of their length): median {np.median(moved):.3f}, "
            f"90th percentile {np.percentile(moved, 90):.3f}"
        )


if __name__ == "__main__":
    main()
