"""Reference values for lam's stage-1 loss terms, optimisers and schedule.

Computed with PyTorch (float64 unless noted) and written as small JSON fixtures that the
Rust tests in crates/lam-model/tests/reference.rs compare against. Run from the repo root:

    python3 tools/reference/make_fixtures.py

Only needed when a fixture changes; tests and CI read the committed JSON files.
Tensors are stored row-major as flat lists with their shape. Linear weights are given in
PyTorch's [out, in] layout; the Rust side transposes them to burn's [in, out].
"""

import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "lam-model", "tests", "fixtures")
torch.manual_seed(0)


def t(x):
    x = x.detach().to(torch.float64)
    return {"shape": list(x.shape), "data": [float(v) for v in x.reshape(-1).tolist()]}


def save(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(obj, f, indent=1)


# --- sparse regulariser: VCM and energy ------------------------------------------------
def vcm(z):
    m, d = z.shape
    mu = z.mean(0)
    zc = z - mu
    std = torch.sqrt(zc.pow(2).sum(0) / (m - 1) + 1e-4)
    variance = torch.relu(1 - std).mean()
    cov = zc.T @ zc / (m - 1)
    off = cov - torch.diag(torch.diag(cov))
    covariance = off.pow(2).sum() / d
    mean = mu.pow(2).mean()
    return variance, covariance, mean


def energy(z, l1, l2):
    d = z.shape[1]
    norm = torch.sqrt(z.pow(2).sum(1) + 1e-12)
    return (l2 * torch.relu(math.sqrt(d) - norm) + l1 * z.abs().sum(1)).mean()


z = (torch.randn(10, 6, dtype=torch.float64) * torch.tensor([0.3, 0.5, 1.0, 1.5, 0.2, 2.0], dtype=torch.float64)) + 0.3
z.requires_grad_(True)
v, c, mn = vcm(z)
e = energy(z, 0.1, 1.0)
total = v + c + mn + e
(grad,) = torch.autograd.grad(total, z)
save("sparse", {"z": t(z), "l1": 0.1, "l2": 1.0, "variance": v.item(), "covariance": c.item(),
                "mean": mn.item(), "energy": e.item(), "grad_total": t(grad)})

# --- noisy regulariser: KL to N(0, I) -------------------------------------------------
mu = torch.randn(7, 5, dtype=torch.float64)
logvar = torch.randn(7, 5, dtype=torch.float64) * 0.5
kl = torch.distributions.kl_divergence(
    torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
).sum(1).mean()
save("kl", {"mu": t(mu), "logvar": t(logvar), "kl": kl.item()})

# --- vq: nearest code, straight-through, codebook and commitment losses -----------------
z_e = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
book = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
w = torch.randn(9, 4, dtype=torch.float64)
dist = (z_e.detach()[:, None, :] - book.detach()[None, :, :]).pow(2).sum(-1)
idx = dist.argmin(1)
e_sel = book[idx]
codebook_loss = (e_sel - z_e.detach()).pow(2).mean()
commitment_loss = (z_e - e_sel.detach()).pow(2).mean()
z_q = z_e + (e_sel - z_e).detach()
beta = 0.25
loss = (z_q * w).sum() + codebook_loss + beta * commitment_loss
g_z, g_book = torch.autograd.grad(loss, [z_e, book])
save("vq", {"z_e": t(z_e), "codebook": t(book), "w": t(w), "commitment": beta,
            "indices": idx.tolist(), "codebook_loss": codebook_loss.item(),
            "commitment_loss": commitment_loss.item(), "z_q": t(z_q), "grad_z_e": t(g_z),
            "grad_codebook": t(g_book)})


# --- Muon: torch.optim.Muon math ----------------------------------------------------------
def muon_reference(w0, grads, lr, momentum, wd, ns=(3.4445, -4.775, 2.0315), steps=5, eps=1e-7):
    """torch.optim.Muon's _single_tensor_muon step by step, with Newton-Schulz in float32
    instead of bfloat16 (the only difference)."""
    w = w0.clone().to(torch.float32)
    buf = torch.zeros_like(w)
    out = []
    a, b, c = ns
    for g in grads:
        g = g.to(torch.float32)
        buf.lerp_(g, 1 - momentum)
        upd = g.lerp(buf, momentum)
        x = upd.clone()
        tr = x.size(0) > x.size(1)
        if tr:
            x = x.T
        x = x / x.norm().clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        if tr:
            x = x.T
        A, B = w.shape[:2]
        adj = lr * math.sqrt(max(1, A / B))
        w.mul_(1 - lr * wd)
        w.add_(x, alpha=-adj)
        out.append(w.clone())
    return out


muon_cases = []
for (out_f, in_f) in [(4, 6), (6, 3)]:
    w0 = torch.randn(out_f, in_f)
    grads = [torch.randn(out_f, in_f) for _ in range(3)]
    lr, mom, wd = 0.02, 0.95, 0.01
    ref = muon_reference(w0, grads, lr, mom, wd)
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.Muon([p], lr=lr, momentum=mom, weight_decay=wd, nesterov=True)
    torch_steps = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        torch_steps.append(p.detach().clone())
    muon_cases.append({"w0": t(w0), "grads": [t(g) for g in grads], "lr": lr, "momentum": mom,
                       "weight_decay": wd, "reference_f32": [t(x) for x in ref],
                       "torch_bf16": [t(x) for x in torch_steps]})
save("muon", {"cases": muon_cases})

# --- AdamW ---------------------------------------------------------------------------------
w0 = torch.randn(3, 5)
grads = [torch.randn(3, 5) for _ in range(3)]
p = torch.nn.Parameter(w0.clone())
opt = torch.optim.AdamW([p], lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.04)
steps = []
for g in grads:
    p.grad = g.clone()
    opt.step()
    steps.append(t(p.detach().clone()))
save("adamw", {"w0": t(w0), "grads": [t(g) for g in grads], "lr": 3e-3, "betas": [0.9, 0.999],
               "eps": 1e-8, "weight_decay": 0.04, "steps": steps})

# --- warmup + cosine --------------------------------------------------------------------------
sched_cases = []
for total, frac, peak, min_frac in [(20, 0.1, 8e-3, 0.0), (50, 0.2, 3e-4, 0.1)]:
    warm = round(total * frac)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    s1 = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=peak * min_frac)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [s1, s2], milestones=[warm])
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        seq.step()
    sched_cases.append({"total": total, "warmup_fraction": frac, "peak": peak, "min_lr_fraction": min_frac, "lrs": lrs})
save("schedule", {"cases": sched_cases})
print("fixtures written to", os.path.normpath(OUT))
