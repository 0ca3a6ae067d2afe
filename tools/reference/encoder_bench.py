"""Encoder throughput, lam-encoder against transformers on the same weights.

Builds random-weight ViT-S-sized models (DINOv2: hidden 384, 12 layers, 6 heads, patch 14;
V-JEPA 2: hidden 384, 12 layers, 6 heads, patch 16, tubelet 2, crop 224), saves them as Hugging
Face folders under --out, times the transformers model (fp32 eager, torch threads = the
machine's cores, no grad) on 224 x 224 frames the way lam embeds them (V-JEPA 2: each frame
repeated to fill its tubelet), then runs the Rust example on the same folder and prints a
markdown table with both frames/s and the ratio. Run from the repo root:

    cargo build --release -p lam-encoder --example encoder_bench
    python3 tools/reference/encoder_bench.py --out /tmp/lam-encoder-bench
"""

import argparse
import json
import os
import subprocess
import time

import torch
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model


def build(out):
    torch.manual_seed(0)
    dino = Dinov2Model(
        Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=224)
    ).eval()
    vjepa = VJEPA2Model(
        VJEPA2Config(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            patch_size=16,
            crop_size=224,
            frames_per_clip=16,
            pred_hidden_size=64,
            pred_num_hidden_layers=1,
            pred_num_attention_heads=2,
        )
    ).eval()
    folders = {"dinov2-s14": dino, "vjepa2-s16": vjepa}
    for name, model in folders.items():
        model.save_pretrained(os.path.join(out, name), safe_serialization=True)
    return folders


def time_torch(name, model, size, frames, batch, reps):
    x = torch.randn(batch, 3, size, size)

    def call():
        with torch.no_grad():
            if name.startswith("vjepa2"):
                # One frame per clip: the model repeats it to fill the tubelet.
                return model(pixel_values_videos=x.unsqueeze(1), skip_predictor=True).last_hidden_state
            return model(pixel_values=x).last_hidden_state

    call()
    calls = -(-frames // batch)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, time.perf_counter() - t)
    return calls * batch / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/lam-encoder-bench")
    ap.add_argument("--rust", default="target/release/examples/encoder_bench")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    models = build(a.out)
    rows = []
    for name, model in models.items():
        torch_fps = time_torch(name, model, a.size, a.frames, a.batch, a.reps)
        cmd = [a.rust, os.path.join(a.out, name), "--size", str(a.size), "--frames", str(a.frames),
               "--batch", str(a.batch), "--reps", str(a.reps)]
        rust = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append((name, rust["frames_per_sec"], torch_fps))
    print(f"torch {torch.__version__}, {os.cpu_count()} threads, {a.size}x{a.size}, batch {a.batch}")
    print("| model | lam-encoder frames/s | transformers frames/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, r, t in rows:
        print(f"| {name} | {r:.2f} | {t:.2f} | {r / t:.2f}x |")


if __name__ == "__main__":
    main()
