"""Latency and throughput of a running `lam serve`: per-`act` latency (the server's own
timing and the client's round trip) and acts per second with 1, 4 and 16 concurrent clients,
each its own connection and episode.

    lam serve --run runs/demo ... --port 8765 &
    python3 clients/python/examples/bench_serve.py --url ws://127.0.0.1:8765 --clients 1,4,16

Observations are 96 x 96 RGB frames (`--frames DIR` with frames.npy [T, H, W, 3] uint8 and
goal.npy, or moving-square frames made here); the server resizes them to its model's size.
Every act of an MPC server with `--replan-every 1` plans; with a larger value only every
k-th act plans and the others only encode and label, so both the mean and the tail are
printed.
"""

import argparse
import threading
import time

import numpy as np

from lam_client import LamClient


def synthetic_frames(n, size=96):
    """A square moving across a grey board: consecutive frames of one episode."""
    frames = np.full((n, size, size, 3), 200, np.uint8)
    for t in range(n):
        x = 8 + (t * 5) % (size - 24)
        frames[t, 40:56, x:x + 16] = (220, 60, 40)
    goal = np.full((size, size, 3), 200, np.uint8)
    goal[40:56, size - 24:size - 8] = (220, 60, 40)
    return frames, goal


def episode(url, frames, goal, steps, mpc, seed, out, timeout):
    with LamClient(url, timeout=timeout) as c:
        if mpc:
            c.reset(goal=goal, seed=seed)
        else:
            c.reset(instruction="reach", seed=seed)
        for t in range(steps):
            t0 = time.perf_counter()
            r = c.act(frames[t % len(frames)])
            out.append(((time.perf_counter() - t0) * 1000.0, r["timing"]["total_ms"], r["planned"]))


def pct(x, q):
    return float(np.percentile(np.asarray(x), q)) if len(x) else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="ws://127.0.0.1:8765")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    ap.add_argument("--steps", type=int, default=20, help="acts per client and level")
    ap.add_argument("--frames", help="folder with frames.npy and goal.npy")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds a client waits for one reply (16 concurrent default-CEM "
                         "plans on 2 cores take minutes)")
    args = ap.parse_args()

    if args.frames:
        frames = np.load(f"{args.frames}/frames.npy")
        goal = np.load(f"{args.frames}/goal.npy")
    else:
        frames, goal = synthetic_frames(40)
    with LamClient(args.url) as c:
        info = c.info()
    mpc = info["model"] == "mpc"
    desc = (f"planner {info['planner']['kind']} {info['planner']['samples']} samples x "
            f"{info['planner']['iterations']} iterations, horizon {info['planner']['horizon']}, "
            f"replan every {info['planner']['replan_every']}") if mpc else \
        f"LAWM policy, chunk {info['policy']['chunk']}, execute {info['policy']['execute']}"
    print(f"server: {info['model']} ({desc}), frames {frames.shape[1]}x{frames.shape[2]} "
          f"-> {info['image']['size']}")
    print("| clients | acts | wall s | acts/s | server ms p50 | p99 | round trip ms p50 | p99 "
          "| planning acts: server ms p50 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in [int(v) for v in args.clients.split(",")]:
        out = []
        threads = [threading.Thread(target=episode,
                                    args=(args.url, frames, goal, args.steps, mpc, k, out, args.timeout))
                   for k in range(n)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        rtt = [o[0] for o in out]
        srv = [o[1] for o in out]
        plan = [o[1] for o in out if o[2]]
        if len(out) != n * args.steps:
            raise SystemExit(f"{n} clients: {len(out)} of {n * args.steps} acts completed")
        print(f"| {n} | {len(out)} | {wall:.1f} | {len(out) / wall:.2f} | {pct(srv, 50):.1f} "
              f"| {pct(srv, 99):.1f} | {pct(rtt, 50):.1f} | {pct(rtt, 99):.1f} "
              f"| {pct(plan, 50):.1f} |", flush=True)


if __name__ == "__main__":
    main()
