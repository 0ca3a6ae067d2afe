#!/usr/bin/env python3
"""Python twin of lam-ingest's decode path, for the ingest benchmark.

Does the same work as lam's side of `lam bench ingest` (which runs this
script as a child process) with PyAV and NumPy: every video under a folder (recursive; mp4, webm, mkv, avi, mov)
is decoded (FFmpeg frame threading, automatic thread count), resampled to
--fps by timestamps (the frame on screen at each time start + k/fps),
resized so the short side is --size (swscale bilinear, long side
floor(long*size/short)), centre-cropped to size x size (offset
floor((scaled-size)/2)), converted to float32 CHW and normalised with ImageNet
statistics. Prints one JSON object with frames/s (wall clock) and frames per
CPU-second (user + system, all threads; steadier on a busy machine).

    pip install av numpy
    python3 tools/reference/ingest_twin.py DIR [--fps 4] [--size 224] [--repeat 1]
"""

import argparse
import json
import os
import sys
import time

import av
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov"}
TOL = 1e-3  # seconds; same tolerance as lam-ingest's TIMESTAMP_TOLERANCE


def list_videos(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if os.path.splitext(f)[1].lower() in EXTS:
                out.append(os.path.join(d, f))
    return sorted(out)


def geometry(w, h, size):
    if w <= h:
        sw, sh = size, max(size, h * size // w)
    else:
        sw, sh = max(size, w * size // h), size
    return sw, sh, (sw - size) // 2, (sh - size) // 2


def preprocess(frame, size):
    sw, sh, cx, cy = geometry(frame.width, frame.height, size)
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="BILINEAR").to_ndarray()
    x = rgb[cy:cy + size, cx:cx + size].astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def frames_of(path, fps, size):
    """Yields (k, time, CHW float32 array) for each grid position; returns decoded count."""
    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "FRAME"
        stream.thread_count = 0
        tb = float(stream.time_base)
        start = None
        k = 0
        prev, prev_t, step = None, None, None
        out = []
        for frame in container.decode(stream):
            decoded += 1
            ts = frame.pts if frame.pts is not None else frame.dts
            t = ts * tb if ts is not None else (prev_t + (step or 1.0 / fps) if prev_t is not None else 0.0)
            if prev_t is not None:
                if t <= prev_t:
                    continue
                step = t - prev_t
            if start is None:
                start = t
            shown = prev if prev is not None else frame
            while start + k / fps + TOL < t:
                out.append((k, k / fps, preprocess(shown, size)))
                k += 1
            prev, prev_t = frame, t
        if prev is None:
            raise ValueError(f"{path}: no decodable video frames")
        end = prev_t + (step if step is not None else 1.0 / fps)
        while start + k / fps < end - TOL:
            out.append((k, k / fps, preprocess(prev, size)))
            k += 1
    return out, decoded


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the folder; the best is reported")
    ap.add_argument("--dump", help="write the first video's frames as a float32 .npy [N, 3, size, size]")
    args = ap.parse_args()
    files = list_videos(args.dir)
    if not files:
        sys.exit(f"{args.dir}: no videos")
    best = None
    for _ in range(args.repeat):
        frames = decoded = 0
        skipped = []
        t0 = time.perf_counter()
        c0 = time.process_time()
        for i, f in enumerate(files):
            try:
                out, d = frames_of(f, args.fps, args.size)
            except Exception as e:  # a bad file is skipped, as in lam-ingest
                skipped.append([f, str(e)])
                continue
            if i == 0 and args.dump:
                np.save(args.dump, np.stack([x for _, _, x in out]))
            frames += len(out)
            decoded += d
        secs = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if best is None or secs < best["seconds"]:
            best = {
                "impl": "python-pyav-numpy",
                "pyav": av.__version__,
                "numpy": np.__version__,
                "files": len(files) - len(skipped),
                "skipped": len(skipped),
                "frames": frames,
                "decoded": decoded,
                "seconds": round(secs, 4),
                "cpu_seconds": round(cpu, 2),
                "frames_per_s": round(frames / secs, 2),
                "decoded_per_s": round(decoded / secs, 2),
                "frames_per_cpu_s": round(frames / cpu, 2),
                "fps": args.fps,
                "size": args.size,
                "dump_file": files[0] if args.dump else None,
            }
    print(json.dumps(best))


if __name__ == "__main__":
    main()
