"""A plain restatement of docs/design.md §7.3, written apart from the engine's pipeline, to check it against.

No speed tricks and none of the pipeline's helpers: it only shares the loaded components (and the transformer
forward, checked on its own against diffusers' CogVideoX in test_transformer.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from PIL import Image

SUFFIX = (" The video is of high quality, and the view is very clear. High quality, masterpiece, best quality, "
          "highres, ultra-detailed, fantastic.")
NEGATIVE = "The video is low quality, blurry, distortion. "


def reference_frames(pipe, image: Image.Image, prompt: str, width: int, height: int, num_frames: int, steps: int,
                     guidance: float, seed: int, fps: int | None = None) -> np.ndarray:
    tok, te, vae, tr, sched = pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler
    vae.num_sample_frames_batch_size = 4
    num_frames = (num_frames - 1) // 4 * 4 + 1
    gen = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        # 1. prompt, [negative, positive]
        ids = tok([NEGATIVE, prompt + SUFFIX], padding="max_length", max_length=pipe.text_len, truncation=True,
                  add_special_tokens=True, return_tensors="pt").input_ids
        embeds = te(ids)[0]
        # 4. noise (drawn before the conditioning, as the reference does)
        lf = (num_frames - 1) // 4 + 1
        latents = torch.randn((1, lf, 16, height // 8, width // 8), generator=gen) * sched.init_noise_sigma
        # 2. video of copies, mask 255 on frames 1.. then binarised
        arr = np.array(image.resize((width, height), Image.BICUBIC))
        video = torch.tile(torch.from_numpy(arr).permute(2, 0, 1)[None, :, None], (1, 1, num_frames, 1, 1)) / 255
        mask = torch.zeros(1, 1, num_frames, height, width)
        mask[:, :, 1:] = 255
        mask = (mask / 255 >= 0.5).float()
        # 3. conditioning latents
        init = video * 2 - 1
        tile = torch.tile(mask, (1, 3, 1, 1, 1))
        masked = init * (tile < 0.5) + torch.ones_like(init) * (tile > 0.5) * -1
        if tr.config.add_noise_in_inpaint_model:
            noise = torch.randn(masked.shape, generator=gen) * 0.0563
            masked = masked + torch.where(masked == -1, torch.zeros_like(noise), noise)
        mv = vae.encode(masked)[0].mode() * vae.config.scaling_factor
        inv = 1 - mask
        first = F.interpolate(inv[:, :, :1], size=(1, *mv.shape[-2:]), mode="trilinear", align_corners=False)
        parts = [first]
        if lf > 1:
            parts.append(F.interpolate(inv[:, :, 1:], size=(lf - 1, *mv.shape[-2:]), mode="trilinear",
                                       align_corners=False))
        ml = torch.cat(parts, dim=2) * vae.config.scaling_factor
        cond = torch.cat([ml, mv], dim=1).permute(0, 2, 1, 3, 4)
        cond = torch.cat([cond, cond])
        rope = None
        if tr.config.use_rotary_positional_embeddings:
            gh, gw = height // 16, width // 16
            base_w, base_h = 720 // 16, 480 // 16
            if gh / gw > base_h / base_w:
                rh, rw = base_h, round(base_h / gh * gw)
            else:
                rw, rh = base_w, round(base_w / gw * gh)
            top, left = round((base_h - rh) / 2), round((base_w - rw) / 2)
            rope = get_3d_rotary_pos_embed(tr.config.attention_head_dim, ((top, left), (top + rh, left + rw)),
                                           (gh, gw), lf, use_real=True)
        fps_t = None if fps is None else torch.tensor([float(fps)] * 2)
        # 5. DDIM loop, eta 0
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([latents, latents]), t)
            out = tr(torch.cat([inp, cond], dim=2), embeds, t.expand(2), fps=fps_t, image_rotary_emb=rope,
                     return_dict=False)[0].float()
            u, c = out.chunk(2)
            latents = sched.step(u + guidance * (c - u), t, latents, eta=0.0, generator=gen, return_dict=False)[0]
        # 6. decode
        frames = vae.decode(latents.permute(0, 2, 1, 3, 4) / vae.config.scaling_factor).sample
        frames = (frames / 2 + 0.5).clamp(0, 1)
    return frames[0].permute(1, 2, 3, 0).numpy()
