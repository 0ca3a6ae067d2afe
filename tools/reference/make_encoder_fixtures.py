"""Parity fixtures for lam-encoder's Hugging Face loaders (DINOv2, DINOv2 with registers, V-JEPA 2).

Builds SMALL random-weight models with `transformers`, saves each as a Hugging Face folder
(`config.json` + `model.safetensors`) under crates/lam-encoder/tests/fixtures/<name>/, and writes
the inputs and the models' `last_hidden_state` for them to
crates/lam-encoder/tests/fixtures/<name>.reference.safetensors (outside the model folder, so the
loader does not mistake it for weights). Run from the repo root:

    pip install torch transformers safetensors
    python3 tools/reference/make_encoder_fixtures.py

Only needed when a fixture changes; the Rust tests read the committed files and need no network.

Every parameter is redrawn at random (layer-norm scales around 1, layer scales, position
embeddings, register tokens included) so that no weight is left at a value that would hide a
wrong formula (a zero bias, a unit scale). Attention runs in the "eager" implementation, fp32.

Inputs per model (keys of the reference file):
- dinov2 (image 32 px, patch 8: a 4 x 4 position grid, GELU MLP):
  `pixels_32` [2, 3, 32, 32] -> `hidden_32` (no position interpolation);
  `pixels_48` [1, 3, 48, 48] -> `hidden_48` (bicubic upsampling of the positions to 6 x 6);
  `pixels_24` [1, 3, 24, 24] -> `hidden_24` (bicubic downsampling to 3 x 3).
- dinov2_registers (image 48 px, patch 8, 4 registers, SwiGLU MLP):
  `pixels_48` -> `hidden_48`; `pixels_64` -> `hidden_64` (antialiased bicubic, up);
  `pixels_32` -> `hidden_32` (antialiased bicubic, down).
- vjepa2 (crop 32 px, patch 8, tubelet 2, 4 frames per clip, head dim 20 so that 2 channels per
  head are left unrotated by the 3-D RoPE): `video` [1, 4, 3, 32, 32] -> `hidden_video`
  [1, 2 * 16, D]; `frame` [1, 1, 3, 32, 32] -> `hidden_frame` [1, 16, D] (the model repeats a
  single frame to fill the tubelet).
"""

import os

import torch
from safetensors.torch import save_file
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    VJEPA2Config,
    VJEPA2Model,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "lam-encoder", "tests", "fixtures")


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "layernorm.weight" in name:
                p.copy_(1.0 + noise)
            elif "lambda1" in name:
                p.copy_(0.5 + noise)
            else:
                p.copy_(noise)
    return model.eval()


def save(name, model, refs):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    refs = {k: v.detach().contiguous().to(torch.float32) for k, v in refs.items()}
    save_file(refs, os.path.join(OUT, name + ".reference.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in refs.items()})


def images(seed, batch, size):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def dinov2():
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        mlp_ratio=4,
        image_size=32,
        patch_size=8,
        layerscale_value=0.5,
        attn_implementation="eager",
    )
    model = randomise(Dinov2Model(config), 1)
    refs = {}
    for size, batch in [(32, 2), (48, 1), (24, 1)]:
        x = images(100 + size, batch, size)
        with torch.no_grad():
            refs[f"pixels_{size}"] = x
            refs[f"hidden_{size}"] = model(pixel_values=x).last_hidden_state
    save("dinov2", model, refs)


def dinov2_registers():
    config = Dinov2WithRegistersConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=4,
        image_size=48,
        patch_size=8,
        num_register_tokens=4,
        use_swiglu_ffn=True,
        layerscale_value=0.5,
        attn_implementation="eager",
    )
    model = randomise(Dinov2WithRegistersModel(config), 2)
    refs = {}
    for size, batch in [(48, 2), (64, 1), (32, 1)]:
        x = images(200 + size, batch, size)
        with torch.no_grad():
            refs[f"pixels_{size}"] = x
            refs[f"hidden_{size}"] = model(pixel_values=x).last_hidden_state
    save("dinov2_registers", model, refs)


def vjepa2():
    config = VJEPA2Config(
        patch_size=8,
        crop_size=32,
        frames_per_clip=4,
        tubelet_size=2,
        hidden_size=40,
        num_attention_heads=2,
        num_hidden_layers=2,
        mlp_ratio=4.0,
        pred_hidden_size=16,
        pred_num_attention_heads=2,
        pred_num_hidden_layers=1,
        pred_num_mask_tokens=2,
        num_pooler_layers=1,
        attn_implementation="eager",
    )
    model = randomise(VJEPA2Model(config), 3)
    g = torch.Generator().manual_seed(300)
    video = torch.randn(1, 4, 3, 32, 32, generator=g)
    frame = torch.randn(1, 1, 3, 32, 32, generator=g)
    with torch.no_grad():
        refs = {
            "video": video,
            "hidden_video": model(pixel_values_videos=video, skip_predictor=True).last_hidden_state,
            "frame": frame,
            "hidden_frame": model(pixel_values_videos=frame, skip_predictor=True).last_hidden_state,
        }
    save("vjepa2", model, refs)


if __name__ == "__main__":
    torch.manual_seed(0)
    dinov2()
    dinov2_registers()
    vjepa2()
