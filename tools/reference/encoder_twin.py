#!/usr/bin/env python3
"""transformers twin of lam-encoder's throughput benchmark (`lam bench ingest`).

Two modes, both printing one JSON object:

- `build --out DIR`: random-weight ViT-S-sized models saved as Hugging Face folders under DIR:
  `dinov2-s14` (Dinov2Model: hidden 384, 12 layers, 6 heads, patch 14) and `vjepa2-s16`
  (VJEPA2Model: hidden 384, 12 layers, 6 heads, patch 16, tubelet 2, crop 224).
- `time --out DIR --model NAME`: loads that folder with transformers and times the forward pass
  (fp32 eager, no grad) on `--size` x `--size` frames the way lam embeds them: batches of
  `--batch` frames, V-JEPA 2 with each frame as a one-frame clip (the model repeats it to fill
  its tubelet, as lam's per-frame mode does); one warm-up call, then `--reps` passes of
  ceil(frames / batch) calls, the fastest pass reported as frames/s.

    python3 tools/reference/encoder_twin.py build --out /tmp/enc
    python3 tools/reference/encoder_twin.py time --out /tmp/enc --model dinov2-s14 [--threads 2]
"""

import argparse
import json
import os
import time

import torch
import transformers
from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

MODELS = ("dinov2-s14", "vjepa2-s16")


def build(out):
    torch.manual_seed(0)
    dino = Dinov2Model(
        Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=224)
    )
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
    )
    for name, model in zip(MODELS, (dino, vjepa)):
        model.eval().save_pretrained(os.path.join(out, name), safe_serialization=True)
    return {"models": list(MODELS)}


def time_model(out, name, size, frames, batch, reps):
    path = os.path.join(out, name)
    cls = VJEPA2Model if name.startswith("vjepa2") else Dinov2Model
    model = cls.from_pretrained(path, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)

    def call():
        with torch.no_grad():
            if cls is VJEPA2Model:
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
    return {"model": name, "frames": calls * batch, "seconds": best, "frames_per_s": calls * batch / best}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["build", "time"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", choices=MODELS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    a = ap.parse_args()
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if a.mode == "build":
        result = build(a.out)
    else:
        if a.model is None:
            ap.error("time needs --model")
        result = time_model(a.out, a.model, a.size, a.frames, a.batch, a.reps)
    result.update({"torch": torch.__version__, "transformers": transformers.__version__, "threads": threads})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
