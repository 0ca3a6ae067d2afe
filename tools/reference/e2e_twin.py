"""PyTorch twin of lam's end-to-end stage-1 training step (`lam train --frames`).

The sim encoder (a ViT over 64 x 64 frames: patch embedding, pre-norm blocks, final layer
norm and head; crates/lam-encoder/src/sim.rs), its frames mean-pooled to one embedding each,
standardised per channel over the batch, the latent action model of lam_twin.py on those
embeddings, and SIGReg on them (LeWorldModel's guard against collapse); one backward pass,
Muon + AdamW for the latent action model as lam_twin.py, AdamW with warmup + cosine for the
encoder. Written the way a PyTorch user would (eager mode, F.scaled_dot_product_attention).
Used by `lam bench e2e` only; lam itself never runs Python.

    python3 tools/reference/e2e_twin.py --dir DIR [--steps N --warmup W --threads K --device D]

DIR (written by `lam bench e2e`) holds config.json (the latent action model's config),
e2e.json (the end-to-end settings), encoder.safetensors and model.safetensors (the initial
weights, burn layout) and batch.safetensors (`clips` [B, T, 3, S, S], the SIGReg `directions`
[D, M], quadrature `knots` and `weights`). The twin reports its loss terms on that batch
without dropout (the parity check against lam's `step_forward`), then times training steps on
random clips of a pool of synthetic frames, built on the host and moved to the device each
step as lam does. Prints one JSON object.
"""

import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from lam_twin import Lam, load_burn_weights, loss_terms, optimizers, peak_bytes, step_bench_args


class SimBlock(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x, heads):
        b, l, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(o.transpose(1, 2).reshape(b, l, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SimEncoder(nn.Module):
    """lam's sim encoder without keypoints: tokens [B, N, D] of frames [B, 3, S, S]."""

    def __init__(self, c):
        super().__init__()
        d, p = c["dim"], c["patch_size"]
        if c.get("keypoints", 0):
            raise ValueError("the twin implements the sim encoder without keypoints")
        n = (c["image_size"] // p) ** 2
        self.p, self.heads = p, c["heads"]
        self.patch_embed = nn.Linear(3 * p * p, d)
        self.pos_embed = nn.Parameter(torch.zeros(n, d))
        hidden = round(d * c["mlp_ratio"])
        self.blocks = nn.ModuleList([SimBlock(d, hidden) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, d)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        # Patches row-major over the grid, each flattened channel, row, column.
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x, self.heads)
        return self.head(self.norm(x))


def embed(encoder, clips):
    """Mean-pooled frame embeddings [B, T, 1, D] of clips [B, T, 3, S, S]."""
    b, t = clips.shape[:2]
    tokens = encoder(clips.flatten(0, 1))
    return tokens.mean(1).view(b, t, 1, -1)


def standardize(emb):
    b, t, n, d = emb.shape
    flat = emb.reshape(-1, d)
    mean = flat.mean(0)
    c = flat - mean
    std = torch.sqrt((c * c).mean(0) + 1e-10).clamp_min(1e-5)
    return (c / std).view(b, t, n, d), mean, std


def sigreg(x, dirs, t, w):
    """SIGReg of rows x [N, D] along unit directions [D, M]: the weighted squared distance of
    the projections' empirical characteristic function to the standard normal's."""
    arg = (x @ dirs).unsqueeze(2) * t
    re, im = torch.cos(arg).mean(0), torch.sin(arg).mean(0)
    err = (re - torch.exp(-0.5 * t * t)) ** 2 + im ** 2
    return (err * w).sum(-1).mean()


def step_loss(encoder, model, clips, cfg, e2e, dirs, t, w, dropout):
    b, tt = clips.shape[:2]
    emb, mean, std = standardize(embed(encoder, clips))
    terms = loss_terms(model, emb, cfg, dropout)
    guard = e2e["sigreg_weight"] * sigreg(emb.reshape(b * tt, -1), dirs, t, w)
    return terms, guard, mean, std


def warmup_cosine(peak, warm, total, min_fraction, step):
    if step < warm:
        return peak * (step + 1) / warm
    p = min((step - warm) / max(total - warm, 1), 1.0)
    lo = peak * min_fraction
    return lo + 0.5 * (peak - lo) * (1 + math.cos(math.pi * p))


def main():
    args = step_bench_args(10)
    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    e2e = json.load(open(os.path.join(args.dir, "e2e.json")))
    device = torch.device(args.device)
    encoder = SimEncoder(e2e["encoder"])
    load_burn_weights(encoder, os.path.join(args.dir, "encoder.safetensors"))
    model = Lam(cfg["model"])
    load_burn_weights(model, os.path.join(args.dir, "model.safetensors"))
    encoder.to(device)
    model.to(device)
    batch = {k: v.to(device) for k, v in load_file(os.path.join(args.dir, "batch.safetensors")).items()}
    t, w = batch["knots"], batch["weights"]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        terms, guard, _, _ = step_loss(encoder, model, batch["clips"], cfg, e2e, batch["directions"], t, w, 0.0)
        parity = {k: float(v) for k, v in terms.items()}
        parity["sigreg"] = float(guard)

    total = args.warmup + args.steps
    opts, scheds = optimizers(model, cfg["optim"], total, args.muon_f32)
    enc_opt = torch.optim.AdamW(encoder.parameters(), lr=e2e["encoder_lr"], weight_decay=e2e["encoder_weight_decay"])
    warm = max(round(total * e2e["warmup_fraction"]), 1)
    b, tt, _, s, _ = batch["clips"].shape
    pool = torch.randn(512, 3, s, s)
    dp, m = batch["directions"].shape
    running = None

    def step(k):
        nonlocal running
        for o in opts + [enc_opt]:
            o.zero_grad(set_to_none=True)
        starts = torch.randint(0, pool.shape[0] - tt, (b,))
        clips = pool[starts[:, None] + torch.arange(tt)].to(device)
        dirs = torch.randn(dp, m, device=device)
        dirs = dirs / dirs.norm(dim=0, keepdim=True).clamp_min(1e-12)
        terms, guard, mean, std = step_loss(encoder, model, clips, cfg, e2e, dirs, t, w, cfg["model"]["action_dropout"])
        with torch.no_grad():
            stats = torch.stack([mean, std])
            running = stats if running is None else running + 0.05 * (stats - running)
        (terms["loss"] + guard).backward()
        for g in enc_opt.param_groups:
            g["lr"] = warmup_cosine(e2e["encoder_lr"], warm, total, 0.1, k)
        for o in opts + [enc_opt]:
            o.step()
        for sc in scheds:
            sc.step()
        return terms["loss"]

    for k in range(args.warmup):
        step(k)
    sync()
    t0 = time.perf_counter()
    last = None
    for k in range(args.warmup, total):
        last = step(k)
    last = float(last)
    sync()
    ms = (time.perf_counter() - t0) * 1000 / args.steps
    print(json.dumps({"parity": parity, "ms_per_step": ms, "final_loss": last,
                      "muon": "f32" if args.muon_f32 else "torch.optim.Muon (bf16)",
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device),
                      "peak_bytes": peak_bytes(device)}))


if __name__ == "__main__":
    main()
