"""How far one shard set's frames sit from another's, in the second set's standardised units.

The feasibility projection (`lam plan eval --feasible`) looks up the frames of the world
model's video nearest each planned frame; this tells whether a robot's frames have near
neighbours in that video at all. Prints each channel's mean and std of the query set in the
reference set's units, and the median distance to the 1st and 8th nearest reference frame,
from the reference set itself and from the query set, over every channel and over the channels whose
query mean lies within 1 reference std of the reference mean and whose query std is within a
factor 3 of the reference std (what `lam plan eval --feasible-domain` keeps).

    .venv/bin/python tools/shard_gap.py REFERENCE_SHARDS QUERY_SHARDS
"""

import glob
import json
import struct
import sys

import numpy as np


def frames(folder):
    """Every distinct frame token of a lam shard folder, `[M, D]`."""
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
    x = np.concatenate(out)
    return np.unique(x.reshape(-1, x.shape[-1]), axis=0)


def nearest(q, s, skip_self):
    d = ((q[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    if skip_self:
        d[d == 0] = np.inf
    return np.sqrt(np.sort(d, 1)[:, :8])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ref, query = frames(sys.argv[1]), frames(sys.argv[2])
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


if __name__ == "__main__":
    main()
