"""PyTorch twin of lam's CEM planner through the stage-1 world model.

Used by `lam bench plan` only. DIR (written by lam) holds config.json, model.safetensors
(burn layout) and problem.safetensors: `history` [1, K, N, D], `history_z` [1, K, d],
`current` [1, N, D], `goal` [1, N, D] and `seqs` [C, H, d] (fixed candidates for a parity
check of the rollout). The twin

1. rolls `seqs` out and reports the final frames' max abs difference to lam's
   (`finals` in problem.safetensors), with and without its own key/value cache;
2. times CEM (samples x iterations x horizon from config.json "planner") with a rollout
   that recomputes the frame history at every step (how PyTorch world-model planners are
   usually written) and with a key/value cache; on the CPU also with the cache under
   `torch.autocast` in bfloat16.

    python3 tools/reference/plan_twin.py --dir DIR [--repeats R --threads K]
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from lam_twin import Lam, apply_rope, load_burn_weights, peak_bytes, rope_tables  # noqa: E402


def block_cached(blk, x, c, cos, sin, heads, past):
    """One block for the newest frame x [B, 1, N, W] attending to past keys/values."""
    b, t, n, w = x.shape
    sa, ca, ga, sm, cm, gm = blk.ada(c).view(b, t, 6, 1, w).unbind(2)
    h = blk.norm1(x) * (1 + ca) + sa
    dh = w // heads
    qkv = blk.qkv(h.view(b, t * n, w)).view(b, t * n, 3, heads, dh).permute(2, 0, 3, 1, 4)
    q, k, v = apply_rope(qkv[0], cos, sin), apply_rope(qkv[1], cos, sin), qkv[2]
    if past is not None:
        k = torch.cat([past[0], k], 2)
        v = torch.cat([past[1], v], 2)
    o = F.scaled_dot_product_attention(q, k, v)
    x = x + blk.proj(o.transpose(1, 2).reshape(b, t, n, w)) * ga
    h = blk.norm2(x) * (1 + cm) + sm
    return x + blk.fc2(F.gelu(blk.fc1(h))) * gm, (k, v)


class Roller:
    def __init__(self, wm, window):
        self.wm = wm
        self.window = window
        self.tables = {}

    def rope(self, first, frames, device):
        key = (first, frames)
        if key not in self.tables:
            w = self.wm.in_proj.out_features
            cos, sin = rope_tables(first + frames, self.wm.grid[0], self.wm.grid[1], w // self.wm.heads, self.wm.theta)
            n = self.wm.grid[0] * self.wm.grid[1]
            self.tables[key] = (cos[first * n:].to(device), sin[first * n:].to(device))
        return self.tables[key]

    def prefill(self, frames, z):
        """Cache for history frames [1, K, N, D] with latents [1, K, d]."""
        wm = self.wm
        b, t, n, _ = frames.shape
        c = F.silu(wm.cond_out(F.silu(wm.cond_in(z))))
        cos, sin, mask = wm.tables(t, n, frames.device)
        x = wm.in_proj(frames)
        cache = []
        w = x.shape[-1]
        for blk in wm.blocks:
            sa, ca, ga, sm, cm, gm = blk.ada(c).view(b, t, 6, 1, w).unbind(2)
            h = blk.norm1(x) * (1 + ca) + sa
            dh = w // wm.heads
            qkv = blk.qkv(h.view(b, t * n, w)).view(b, t * n, 3, wm.heads, dh).permute(2, 0, 3, 1, 4)
            q, k, v = apply_rope(qkv[0], cos, sin), apply_rope(qkv[1], cos, sin), qkv[2]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + blk.proj(o.transpose(1, 2).reshape(b, t, n, w)) * ga
            h = blk.norm2(x) * (1 + cm) + sm
            x = x + blk.fc2(F.gelu(blk.fc1(h))) * gm
            cache.append((k, v))
        return cache, t

    def step(self, cache, pos, frame, z):
        """frame [C, N, D], z [C, d] -> prediction [C, N, D] and the extended cache."""
        wm = self.wm
        n = frame.shape[1]
        cos, sin = self.rope(pos, 1, frame.device)
        c = F.silu(wm.cond_out(F.silu(wm.cond_in(z[:, None]))))
        x = wm.in_proj(frame[:, None])
        new = []
        for blk, past in zip(wm.blocks, cache):
            x, kv = block_cached(blk, x, c, cos, sin, wm.heads, past)
            keep = self.window * n
            new.append((kv[0][:, :, -keep:], kv[1][:, :, -keep:]))
        s, sc = wm.final_ada(c).view(x.shape[0], 1, 2, 1, -1).unbind(2)
        out = wm.out_proj(wm.final_norm(x) * (1 + sc) + s)
        return out[:, 0], new

    def rollout_cached(self, base_cache, pos, current, z):
        cnum, h, _ = z.shape
        cache = [(k.expand(cnum, -1, -1, -1), v.expand(cnum, -1, -1, -1)) for k, v in base_cache]
        frame = current.expand(cnum, -1, -1)
        for k in range(h):
            frame, cache = self.step(cache, pos + k, frame, z[:, k])
        return frame

    def rollout_recompute(self, history, history_z, current, z):
        cnum, h, d = z.shape
        frames = [history.expand(cnum, -1, -1, -1)]
        lats = [history_z.expand(cnum, -1, -1)]
        frame = current.expand(cnum, -1, -1)
        for k in range(h):
            frames.append(frame[:, None])
            lats.append(z[:, k:k + 1])
            f = torch.cat(frames, 1)
            zz = torch.cat(lats, 1)
            keep = min(self.window + 1, f.shape[1])
            pred = self.wm(f[:, -keep:], zz[:, -keep:])
            frame = pred[:, -1]
        return frame


def cosine_cost(finals, goal):
    a = finals.mean(1)
    g = goal.mean(1)
    return 1 - F.cosine_similarity(a, g.expand_as(a), dim=-1, eps=1e-12)


def cem(roll, problem, p, cached, gen):
    h, d = p["horizon"], problem["history_z"].shape[-1]
    dev = problem["current"].device
    mean = torch.zeros(h, d, device=dev)
    std = torch.ones(h, d, device=dev)
    base = None
    if cached:
        base, pos = roll.prefill(problem["history"], problem["history_z"])
    best = (math.inf, None)
    for _ in range(p["iterations"]):
        seqs = mean + std * torch.randn(p["samples"], h, d, generator=gen, device=gen.device)
        if cached:
            finals = roll.rollout_cached(base, pos, problem["current"], seqs)
        else:
            finals = roll.rollout_recompute(problem["history"], problem["history_z"], problem["current"], seqs)
        costs = cosine_cost(finals, problem["goal"])
        order = torch.argsort(costs)
        if costs[order[0]] < best[0]:
            best = (float(costs[order[0]]), seqs[order[0]])
        elites = seqs[order[:p["elites"]]]
        mean = elites.mean(0)
        std = elites.std(0, unbiased=False).clamp(min=p["min_std"])
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    model = Lam(cfg["model"])
    load_burn_weights(model, os.path.join(args.dir, "model.safetensors"))
    model.eval()
    device = torch.device(args.device)
    model.to(device)
    problem = {k: v.to(device) for k, v in load_file(os.path.join(args.dir, "problem.safetensors")).items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    window = cfg["window"]
    roll = Roller(model.world_model, window)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    with torch.inference_mode():
        seqs = problem["seqs"]
        base, pos = roll.prefill(problem["history"], problem["history_z"])
        f_cached = roll.rollout_cached(base, pos, problem["current"], seqs)
        f_re = roll.rollout_recompute(problem["history"], problem["history_z"], problem["current"], seqs)
        out["parity_cached_max_abs"] = float((f_cached - problem["finals"]).abs().max())
        out["parity_recompute_max_abs"] = float((f_re - problem["finals"]).abs().max())
        p = cfg["planner"]

        def ms_per_plan(cached):
            """The fastest of `repeats` timed CEM plans after one warm-up, in ms."""
            gen = torch.Generator(device=device).manual_seed(0)
            cem(roll, problem, p, cached, gen)  # warm-up
            sync()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                cem(roll, problem, p, cached, gen)
                sync()
                times.append(time.perf_counter() - t0)
            return 1000 * min(times)

        for cached in (False, True):
            out["ms_per_plan_" + ("cached" if cached else "recompute")] = ms_per_plan(cached)
        # PyTorch's own mixed precision for the CPU: the linear layers in bfloat16 (oneDNN,
        # AMX tiles where the CPU has them), the norms and softmax in float32. The like for
        # like of lam's `precision = "bf16"`.
        if device.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                f_bf16 = roll.rollout_cached(base, pos, problem["current"], seqs).float()
                out["bf16_cached_max_abs"] = float((f_bf16 - problem["finals"]).abs().max())
                out["ms_per_plan_cached_bf16"] = ms_per_plan(True)
    out["peak_bytes"] = peak_bytes(device)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
