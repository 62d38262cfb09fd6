"""One image-to-orbit inpaint pipeline for Droplet3D and DropletVideo (docs/design.md §7.3).

Read it like diffusers' CogVideoX image-to-video pipeline: components come in through the constructor and
``__call__`` runs in numbered stages. The Droplet differences are named where they happen: the prompt suffix
and negative prompt, the mask and masked-video conditioning, the optional reference noise, the FPS input.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLCogVideoX, DDIMScheduler, DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import T5EncoderModel, T5Tokenizer

from .embeddings import rotary_embedding
from .transformer import DropletTransformer3DModel

PROMPT_SUFFIX = (
    " The video is of high quality, and the view is very clear. High quality, masterpiece, best quality, highres, "
    "ultra-detailed, fantastic."
)
DEFAULT_NEGATIVE_PROMPT = "The video is low quality, blurry, distortion. "
REFERENCE_NOISE_STD = 0.0563
VAE_ENCODE_FRAMES = 4  # the reference encodes 4 pixel frames per chunk (diffusers' default is 8)
VAE_DECODE_LATENT_FRAMES = 2

StageCallback = Callable[[str, int, int], None]
StepCallback = Callable[["DropletInpaintPipeline", int, torch.Tensor, dict], dict]


def round_frames(num_frames: int) -> int:
    """The reference's frame count: rounded down to ``4k+1`` (1 stays 1)."""
    return (num_frames - 1) // 4 * 4 + 1


def resize_mask(mask: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, 1, F, H, W)`` pixel mask → ``(B, 1, f, h, w)``: frame 0 alone to latent frame 0, the rest to the rest."""
    f, h, w = latent_shape
    first = F.interpolate(mask[:, :, :1], size=(1, h, w), mode="trilinear", align_corners=False)
    if f == 1:
        return first
    rest = F.interpolate(mask[:, :, 1:], size=(f - 1, h, w), mode="trilinear", align_corners=False)
    return torch.cat([first, rest], dim=2)


class DropletInpaintPipeline(DiffusionPipeline):
    """Image (+ dense prompt) → video, as the published Droplet3D / DropletVideo inference.

    ``text_len`` is the T5 length the model was trained with (Droplet3D 450, DropletVideo 400).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(
        self,
        tokenizer: T5Tokenizer,
        text_encoder: T5EncoderModel,
        vae: AutoencoderKLCogVideoX,
        transformer: DropletTransformer3DModel,
        scheduler: DDIMScheduler,
        text_len: int = 450,
    ) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        self.text_len = text_len
        self.vae.num_sample_frames_batch_size = VAE_ENCODE_FRAMES
        self.vae.num_latent_frames_batch_size = VAE_DECODE_LATENT_FRAMES
        self.vae_scale_spatial = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale_temporal = self.vae.config.temporal_compression_ratio
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def encode_text(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """T5 embeddings padded to ``text_len`` (truncating, with special tokens), as the reference."""
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.text_len, truncation=True, add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0].to(dtype=dtype, device=device)

    def prepare_conditioning(
        self, image: Image.Image, num_frames: int, height: int, width: int, latent_frames: int,
        generator: torch.Generator | None, device: torch.device, dtype: torch.dtype,
    ) -> torch.Tensor:
        """Mask latent ⊕ masked-video latents, ``(1, f, 17, h, w)``.

        The video is the image repeated; frame 0 is kept (mask 0) and every other frame is masked (mask 1, −1
        pixels). ``add_noise_in_inpaint_model`` adds std-0.0563 noise wherever the masked video is not exactly −1.
        """
        pixels = torch.from_numpy(np.asarray(image.resize((width, height), Image.BICUBIC), dtype=np.float32) / 255.0)
        video = pixels.permute(2, 0, 1)[None, :, None].expand(1, 3, num_frames, height, width) * 2.0 - 1.0
        mask = torch.ones(1, 1, num_frames, height, width)
        mask[:, :, 0] = 0.0
        masked = torch.where(mask < 0.5, video, torch.full_like(video, -1.0)).to(device)
        if self.transformer.config.get("add_noise_in_inpaint_model", False):
            noise = randn_tensor(masked.shape, generator=generator, device=device, dtype=masked.dtype)
            masked = masked + torch.where(masked == -1, torch.zeros_like(noise), noise * REFERENCE_NOISE_STD)
        scaling = self.vae.config.scaling_factor
        masked_latents = self.vae.encode(masked.to(self.vae.dtype))[0].mode() * scaling
        h, w = masked_latents.shape[-2:]
        mask_latents = resize_mask(1.0 - mask, (latent_frames, h, w)).to(device) * scaling
        cond = torch.cat([mask_latents.to(masked_latents.dtype), masked_latents], dim=1)
        return cond.permute(0, 2, 1, 3, 4).to(dtype)

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        prompt: str,
        negative_prompt: str | None = None,
        height: int = 512,
        width: int = 512,
        num_frames: int = 85,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        generator: torch.Generator | None = None,
        fps: int | None = None,
        stage_callback: StageCallback | None = None,
        callback_on_step_end: StepCallback | None = None,
        cfg_truncation: float = 0.0,
    ) -> np.ndarray | None:
        """Returns ``(F, H, W, 3) float32`` frames in [0, 1], or None when interrupted.

        ``cfg_truncation`` (a speed switch, 0 in the published inference): the last ``floor(steps × fraction)``
        steps skip the unconditional pass and use the conditional prediction alone.
        """
        # 1. Check inputs
        if height % 16 or width % 16:
            raise ValueError(f"height and width must be multiples of 16, got {height}x{width}")
        if self.transformer.fps_embedding is not None and fps is None:
            raise ValueError("this is a DropletVideo transformer: pass fps")
        num_frames = round_frames(num_frames)
        report = stage_callback or (lambda stage, step, total: None)
        self._interrupt = False

        # 2. Call parameters: classifier-free guidance runs as one batch [negative, positive]
        device = self._execution_device
        dtype = self.transformer.dtype
        do_cfg = guidance_scale > 1.0
        latent_frames = (num_frames - 1) // self.vae_scale_temporal + 1

        # 3. Encode the prompt with the Droplet suffix and default negative prompt
        report("encoding", 0, 1)
        prompts = [prompt + PROMPT_SUFFIX]
        if do_cfg:
            prompts.insert(0, DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
        prompt_embeds = self.encode_text(prompts, device, dtype)

        # 4. Timesteps (strength 1: all of them)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. Initial noise from the seeded generator
        shape = (1, latent_frames, 16, height // self.vae_scale_spatial, width // self.vae_scale_spatial)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma

        # 6. Conditioning: mask latent ⊕ masked-video latents, duplicated for CFG
        cond = self.prepare_conditioning(image, num_frames, height, width, latent_frames, generator, device, dtype)
        if do_cfg:
            cond = torch.cat([cond, cond])
        report("encoding", 1, 1)

        # 7. Rotary embeddings (only when the config asks for them) and the FPS input (DropletVideo)
        cfg = self.transformer.config
        rope = None
        if cfg.use_rotary_positional_embeddings:
            rope = rotary_embedding(latent_frames, height, width, cfg.patch_size, cfg.attention_head_dim, device,
                                    self.vae_scale_spatial)
        fps_input = None if fps is None or self.transformer.fps_embedding is None else torch.full(
            (cond.shape[0],), float(fps), device=device)

        # 8. Denoising loop: DDIM with eta 0 as published (another solver takes its own arguments). With CFG
        # truncation the last steps run the positive half of the batch alone, under its own cache context.
        total = len(timesteps)
        guided_steps = total - int(np.floor(total * cfg_truncation)) if do_cfg else 0
        step_kwargs = {key: value for key, value in (("eta", 0.0), ("generator", generator))
                       if key in inspect.signature(self.scheduler.step).parameters}
        report("denoising", 0, total)
        for i, t in enumerate(timesteps):
            guided = i < guided_steps
            last = slice(None) if guided else slice(-1, None)  # [negative, positive] or [positive]
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            with self.transformer.cache_context("cond_uncond" if guided else "cond"):
                noise_pred = self.transformer(
                    hidden_states=torch.cat([model_input, cond[last]], dim=2),
                    encoder_hidden_states=prompt_embeds[last],
                    timestep=t.expand(model_input.shape[0]), fps=None if fps_input is None else fps_input[last],
                    image_rotary_emb=rope, return_dict=False,
                )[0].float()
            if guided:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (text - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            latents = latents.to(dtype)
            report("denoising", i + 1, total)
            if callback_on_step_end is not None:
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
            if self.interrupt:
                self.maybe_free_model_hooks()
                return None

        # 9. Decode
        report("decoding", 0, 1)
        frames = self.decode_latents(latents)
        report("decoding", 1, 1)
        self.maybe_free_model_hooks()
        return frames

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        latents = latents.permute(0, 2, 1, 3, 4) / self.vae.config.scaling_factor
        video = self.vae.decode(latents.to(self.vae.dtype)).sample
        video = (video / 2 + 0.5).clamp(0, 1)
        return video[0].permute(1, 2, 3, 0).float().cpu().numpy()
