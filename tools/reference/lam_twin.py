"""PyTorch twin of lam's stage-1 latent action model and training step.

The same computation as crates/lam-model (IDM, AdaLN-zero frame-causal world model with 3-D
RoPE, sparse regulariser, Muon for 2-D weights + AdamW for the rest), written the way a
PyTorch user would (eager mode, F.scaled_dot_product_attention, torch.optim.Muon/AdamW).
Used by `lam bench train` only; lam itself never runs Python.

    python3 tools/reference/lam_twin.py --dir DIR [--steps N --warmup W --threads K]

DIR (written by `lam bench train`) holds config.json (the run config), model.safetensors
(the Rust model's initial weights, burn layout: Linear weights [in, out]) and batch.safetensors
(`clips` [B, T, N, D]). The twin loads the weights, reports its loss terms on the batch
without dropout (a parity check against the Rust model), then times training steps.
Prints one JSON object.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class Idm(nn.Module):
    def __init__(self, d, hidden, out):
        super().__init__()
        self.fc1 = nn.Linear(2 * d, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, out)

    def forward(self, pooled):  # [B, T, D] -> [B, T-1, out]
        x = torch.cat([pooled[:, :-1], pooled[:, 1:]], dim=-1)
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


def rope_tables(frames, rows, cols, head_dim, theta):
    pairs = head_dim // 2
    spatial = pairs // 3
    temporal = pairs - 2 * spatial

    def freqs(n):
        return [theta ** (-k / max(n, 1)) for k in range(n)]

    ft, fs = freqs(temporal), freqs(spatial)
    angles = []
    for f in range(frames):
        for r in range(rows):
            for c in range(cols):
                angles.append([w * f for w in ft] + [w * r for w in fs] + [w * c for w in fs])
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.cos(a).float(), torch.sin(a).float()  # [L, pairs]


def apply_rope(x, cos, sin):  # x [B, H, L, Dh]
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, w, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.norm2 = nn.LayerNorm(w)
        self.fc1 = nn.Linear(w, hidden)
        self.fc2 = nn.Linear(hidden, w)
        self.ada = nn.Linear(w, 6 * w)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, c, cos, sin, mask, heads):
        b, t, n, w = x.shape
        # AdaLN modulation once per frame, broadcast over the frame's tokens.
        sa, ca, ga, sm, cm, gm = self.ada(c).view(b, t, 6, 1, w).unbind(2)
        h = self.norm1(x) * (1 + ca) + sa
        dh = w // heads
        qkv = self.qkv(h.view(b, t * n, w)).view(b, t * n, 3, heads, dh).permute(2, 0, 3, 1, 4)
        q, k, v = apply_rope(qkv[0], cos, sin), apply_rope(qkv[1], cos, sin), qkv[2]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(o.transpose(1, 2).reshape(b, t, n, w)) * ga
        h = self.norm2(x) * (1 + cm) + sm
        return x + self.fc2(F.gelu(self.fc1(h))) * gm


class WorldModel(nn.Module):
    def __init__(self, m):
        super().__init__()
        w = m["wm_dim"]
        self.heads = m["wm_heads"]
        self.grid = m["grid"]
        self.theta = m["rope_theta"]
        self.in_proj = nn.Linear(m["embed_dim"], w)
        self.cond_in = nn.Linear(m["latent_dim"], w)
        self.cond_out = nn.Linear(w, w)
        hidden = round(w * m["wm_mlp_ratio"])
        self.blocks = nn.ModuleList([Block(w, hidden) for _ in range(m["wm_depth"])])
        self.final_norm = nn.LayerNorm(w)
        self.final_ada = nn.Linear(w, 2 * w)
        nn.init.zeros_(self.final_ada.weight)
        nn.init.zeros_(self.final_ada.bias)
        self.out_proj = nn.Linear(w, m["embed_dim"])
        self._cache = {}

    def tables(self, t, n, device):
        key = (t, n)
        if key not in self._cache:
            w = self.in_proj.out_features
            cos, sin = rope_tables(t, self.grid[0], self.grid[1], w // self.heads, self.theta)
            frame = torch.arange(t * n) // n
            mask = torch.where(frame[None, :] <= frame[:, None], 0.0, -1e9)
            self._cache[key] = (cos.to(device), sin.to(device), mask.to(device))
        return self._cache[key]

    def forward(self, frames, z):
        b, t, n, _ = frames.shape
        cos, sin, mask = self.tables(t, n, frames.device)
        c = F.silu(self.cond_out(F.silu(self.cond_in(z))))
        x = self.in_proj(frames)
        for blk in self.blocks:
            x = blk(x, c, cos, sin, mask, self.heads)
        s, sc = self.final_ada(c).view(b, t, 2, 1, -1).unbind(2)
        return self.out_proj(self.final_norm(x) * (1 + sc) + s)


class Lam(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.idm = Idm(m["embed_dim"], m["idm_hidden"], m["latent_dim"])
        self.world_model = WorldModel(m)


def sparse_terms(z, r):
    m, d = z.shape
    mu = z.mean(0)
    zc = z - mu
    std = torch.sqrt(zc.pow(2).sum(0) / (m - 1) + 1e-4)
    variance = F.relu(1 - std).mean()
    cov = zc.T @ zc / (m - 1)
    covariance = (cov - torch.diag(torch.diag(cov))).pow(2).sum() / d
    mean = mu.pow(2).mean()
    norm = torch.sqrt(z.pow(2).sum(1) + 1e-12)
    energy = (r["l2"] * F.relu(math.sqrt(d) - norm) + r["l1"] * z.abs().sum(1)).mean()
    return variance, covariance, mean, energy


def loss_terms(model, clips, cfg, dropout):
    r = cfg["regularizer"]
    b, t, _, _ = clips.shape
    z = model.idm(clips.mean(2))
    d = z.shape[-1]
    z_in = z
    if dropout > 0:
        keep = (torch.rand(b, t - 1, 1, device=clips.device) >= dropout).float()
        z_in = z * keep
    pred = model.world_model(clips[:, :-1], z_in)
    l_pred = (pred - clips[:, 1:]).abs().mean()
    v, c, mn, e = sparse_terms(z.reshape(-1, d), r)
    total = l_pred + r["vcm_variance"] * v + r["vcm_covariance"] * c + r["vcm_mean"] * mn + e
    return {"loss": total, "pred": l_pred, "vcm_variance": v, "vcm_covariance": c, "vcm_mean": mn, "energy": e}


def load_burn_weights(model, path):
    """burn-store names: Linear weight [in, out] (transposed here), LayerNorm gamma/beta."""
    src = load_file(path)
    state = {}
    for name, p in model.named_parameters():
        mod_name, leaf = name.rsplit(".", 1) if "." in name else ("", name)
        mod = model.get_submodule(mod_name)
        if isinstance(mod, nn.LayerNorm):
            key = f"{mod_name}.{'gamma' if leaf == 'weight' else 'beta'}"
        else:
            key = name
        if key not in src:
            raise KeyError(f"{path}: no tensor {key} for {name}")
        v = src[key]
        if isinstance(mod, nn.Linear) and leaf == "weight":
            v = v.T
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"{key}: shape {tuple(v.shape)} vs {tuple(p.shape)}")
        state[name] = v.contiguous()
    model.load_state_dict(state, strict=True)


class MuonF32(torch.optim.Optimizer):
    """torch.optim.Muon's update with Newton-Schulz in float32 instead of bfloat16 (the math
    lam's Muon runs; CPUs without bf16 matrix units run bf16 matmuls slowly)."""

    def __init__(self, params, lr, momentum, weight_decay, ns=(3.4445, -4.775, 2.0315), steps=5, eps=1e-7):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.ns, self.steps, self.eps = ns, steps, eps

    @torch.no_grad()
    def step(self):
        a, b, c = self.ns
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                buf = st.setdefault("buf", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mom)
                x = p.grad.lerp(buf, mom)
                tr = x.size(0) > x.size(1)
                if tr:
                    x = x.T
                x = x / x.norm().clamp(min=self.eps)
                for _ in range(self.steps):
                    gram = x @ x.T
                    x = a * x + (b * gram + c * gram @ gram) @ x
                if tr:
                    x = x.T
                A, B = p.shape[:2]
                p.mul_(1 - lr * wd)
                p.add_(x, alpha=-lr * math.sqrt(max(1, A / B)))


def optimizers(model, o, steps, muon_f32=False):
    muon_params, adamw_params = [], []
    for name, p in model.named_parameters():
        if p.ndim == 2 and name.endswith("weight"):
            muon_params.append(p)
        else:
            adamw_params.append(p)
    if muon_f32:
        muon = MuonF32(muon_params, lr=o["muon_lr"], momentum=o["muon_momentum"], weight_decay=o["muon_weight_decay"])
    else:
        muon = torch.optim.Muon(muon_params, lr=o["muon_lr"], momentum=o["muon_momentum"], nesterov=True,
                                weight_decay=o["muon_weight_decay"])
    adamw = torch.optim.AdamW(adamw_params, lr=o["adamw_lr"], betas=tuple(o["adamw_betas"]),
                              eps=o["adamw_eps"], weight_decay=o["weight_decay"])
    warm = min(round(steps * o["warmup_fraction"]), steps - 1)

    def factor(s):
        if s < warm:
            return (s + 1) / warm
        p = (s - warm) / max(steps - warm, 1)
        return o["min_lr_fraction"] + (1 - o["min_lr_fraction"]) * 0.5 * (1 + math.cos(math.pi * p))

    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (muon, adamw)]
    return [muon, adamw], scheds


def peak_bytes(device):
    """Peak CUDA allocation on a GPU; the process's peak resident memory on the CPU.

    On Linux the peak is read from /proc/self/status (VmHWM, reset at exec): getrusage's
    ru_maxrss survives exec, so a twin started by lam would report lam's own peak whenever
    that was the larger."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def step_bench_args(default_steps):
    """The command line of a training-step twin (this one and e2e_twin.py), parsed, with the
    thread count and the seed set."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--steps", type=int, default=default_steps)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--muon-f32", action="store_true", help="Newton-Schulz in float32 (lam's math) instead of torch.optim.Muon's bfloat16")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def main():
    args = step_bench_args(20)
    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    model = Lam(cfg["model"])
    load_burn_weights(model, os.path.join(args.dir, "model.safetensors"))
    device = torch.device(args.device)
    model.to(device)
    clips = load_file(os.path.join(args.dir, "batch.safetensors"))["clips"].to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        parity = {k: float(v) for k, v in loss_terms(model, clips, cfg, 0.0).items()}

    opts, scheds = optimizers(model, cfg["optim"], args.warmup + args.steps, args.muon_f32)

    def step():
        for o in opts:
            o.zero_grad(set_to_none=True)
        terms = loss_terms(model, clips, cfg, cfg["model"]["action_dropout"])
        terms["loss"].backward()
        for o in opts:
            o.step()
        for s in scheds:
            s.step()
        return float(terms["loss"])

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    last = float("nan")
    for _ in range(args.steps):
        last = step()
    sync()
    ms = (time.perf_counter() - t0) * 1000 / args.steps
    print(json.dumps({"parity": parity, "ms_per_step": ms, "final_loss": last, "muon": "f32" if args.muon_f32 else "torch.optim.Muon (bf16)",
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device),
                      "peak_bytes": peak_bytes(device)}))


if __name__ == "__main__":
    main()
