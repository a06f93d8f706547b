"""Component architectures of each pipeline family, at two scales.

`full` is the published architecture (FLUX.1, SDXL 1.0, SD 1.5): the `random:` weight source
builds it with random weights for GPU benchmarks, so compute cost equals the real model.
`tiny` keeps the real latent geometry (VAE x8 downsampling, FLUX 2x2 latent packing, SDXL
micro-conditioning) with a few channels, so real API sizes such as 1024*1024 render in well
under a second on a CPU. Both scales go through the same builders; only numbers differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cluster.spec.families import Family

Scale = Literal["tiny", "full"]


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder: transformers class name, its config kwargs, and its tokenizer kind."""

    model_class: Literal["CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"]
    config: dict[str, Any]
    tokenizer: Literal["clip", "t5"]


@dataclass(frozen=True)
class Architecture:
    """Everything needed to instantiate a family's components (weights aside)."""

    family: Family
    denoiser_class: Literal["FluxTransformer2DModel", "UNet2DConditionModel"]
    denoiser: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[TextEncoderSpec]
    scheduler_class: str
    scheduler: dict[str, Any]
    extra_components: dict[str, Any] = field(default_factory=dict)

    @property
    def denoiser_name(self) -> str:
        return "transformer" if self.denoiser_class == "FluxTransformer2DModel" else "unet"


# --- VAE ------------------------------------------------------------------------------------
# Four blocks = three 2x downsamplings = the x8 geometry of every real SD/FLUX VAE.


def _vae(scale: Scale, latent_channels: int, **real: Any) -> dict[str, Any]:
    # Tiny: equal widths, because an encoder level without resnets cannot change width.
    blocks = (128, 256, 512, 512) if scale == "full" else (4, 4, 4, 4)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": list(blocks),
        # Tiny: one resnet per decoder level (the decoder adds one to this count).
        "layers_per_block": 2 if scale == "full" else 0,
        "latent_channels": latent_channels,
        "norm_num_groups": 32 if scale == "full" else 2,
        "sample_size": 1024,
        # Tiny: the mid-block attention would attend over all 16k latent pixels at 1024*1024.
        "mid_block_add_attention": scale == "full",
        **real,
    }


# --- Text encoders --------------------------------------------------------------------------


def _clip(scale: Scale, full: dict[str, Any], act: str, model: str) -> TextEncoderSpec:
    """A CLIP text encoder: `full` dims at full scale, two tiny layers otherwise."""
    dims = full if scale == "full" else {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                         "num_attention_heads": 2, "projection_dim": 32,
                                         "vocab_size": TINY_CLIP_VOCAB}
    config = dims | {"hidden_act": act, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1}
    return TextEncoderSpec(model, config, "clip")  # type: ignore[arg-type]


def _clip_l(scale: Scale) -> TextEncoderSpec:
    """OpenAI CLIP ViT-L/14 text encoder (FLUX, SD 1.5, SDXL's first)."""
    return _clip(scale, {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "projection_dim": 768, "vocab_size": 49408},
                 "quick_gelu", "CLIPTextModel")


def _clip_bigg(scale: Scale) -> TextEncoderSpec:
    """OpenCLIP ViT-bigG/14 text encoder with projection (SDXL's second)."""
    return _clip(scale, {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                         "num_attention_heads": 20, "projection_dim": 1280, "vocab_size": 49408},
                 "gelu", "CLIPTextModelWithProjection")


def _t5_xxl(scale: Scale) -> TextEncoderSpec:
    if scale == "full":
        config = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240,
                  "num_layers": 24, "num_heads": 64}
    else:
        config = {"vocab_size": TINY_T5_VOCAB, "d_model": 32, "d_kv": 8, "d_ff": 64,
                  "num_layers": 2, "num_heads": 4}
    config |= {"feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
               "is_encoder_decoder": False, "use_cache": False, "pad_token_id": 0, "eos_token_id": 1}
    return TextEncoderSpec("T5EncoderModel", config, "t5")


# Vocabulary sizes of the locally trained tiny tokenizers (cluster/doubles/tiny_tokenizers.py).
TINY_CLIP_VOCAB = 1000
TINY_T5_VOCAB = 1000


# --- Families -------------------------------------------------------------------------------


def _flux(family: Family, scale: Scale) -> Architecture:
    if scale == "full":
        denoiser = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
                    "num_attention_heads": 24, "joint_attention_dim": 4096,
                    "pooled_projection_dim": 768, "axes_dims_rope": [16, 56, 56]}
        latent_channels = 16
    else:
        denoiser = {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                    "num_attention_heads": 1, "joint_attention_dim": 32,
                    "pooled_projection_dim": 32, "axes_dims_rope": [4, 6, 6]}
        latent_channels = 4
    # FLUX packs 2x2 latent patches into tokens, so the transformer sees 4x the VAE channels.
    packed = 4 * latent_channels
    denoiser |= {"patch_size": 1, "in_channels": packed, "guidance_embeds": True}
    if family == Family.FLUX_FILL:
        # Fill reads, beside the noisy latents, the masked input's latents and the mask folded
        # into the VAE's 8x8 pixels per latent (64 channels), each packed 2x2: 64 + 64 + 256 = 384
        # channels at full scale, as FLUX.1-Fill-dev's config says.
        denoiser |= {"in_channels": packed + packed + 4 * 8 * 8, "out_channels": packed}
    return Architecture(
        family=family,
        denoiser_class="FluxTransformer2DModel",
        denoiser=denoiser,
        vae=_vae(scale, latent_channels, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False),
        text_encoders=[_clip_l(scale), _t5_xxl(scale)],
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler={"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                   "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                   "max_image_seq_len": 4096},
        # FLUX and Kontext take an IP-Adapter's image encoder (none here); Fill has no such slot.
        extra_components={} if family == Family.FLUX_FILL else {"image_encoder": None, "feature_extractor": None},
    )


def _unet(scale: Scale, sdxl: bool) -> dict[str, Any]:
    if sdxl and scale == "full":
        return {"block_out_channels": [320, 640, 1280], "layers_per_block": 2,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
                "cross_attention_dim": 2048, "use_linear_projection": True,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816, "sample_size": 128}
    if sdxl:
        # text_time micro-conditioning: 6 time ids x 8 + pooled text embedding (32) = 80.
        return {"block_out_channels": [8, 16, 32], "layers_per_block": 1,
                "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                "transformer_layers_per_block": [1, 1, 1], "attention_head_dim": [2, 4, 4],
                "cross_attention_dim": 64, "use_linear_projection": True, "norm_num_groups": 8,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                "projection_class_embeddings_input_dim": 80, "sample_size": 128}
    if scale == "full":
        return {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
                "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64}
    return {"block_out_channels": [8, 16, 32], "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            "attention_head_dim": 4, "cross_attention_dim": 32, "norm_num_groups": 8,
            "sample_size": 64}


_SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "steps_offset": 1}


def _stable_diffusion(family: Family, scale: Scale) -> Architecture:
    """SDXL and SD 1.5: one UNet layout, apart in their UNet's size, VAE scaling, text encoders
    (SDXL: two, and micro-conditioning), scheduler and the pipeline's optional parts."""
    sdxl = family == Family.SDXL
    return Architecture(
        family=family,
        denoiser_class="UNet2DConditionModel",
        denoiser=_unet(scale, sdxl=sdxl) | {"in_channels": 4, "out_channels": 4},
        vae=_vae(scale, 4, scaling_factor=0.13025 if sdxl else 0.18215),
        text_encoders=[_clip_l(scale), _clip_bigg(scale)] if sdxl else [_clip_l(scale)],
        scheduler_class="EulerDiscreteScheduler" if sdxl else "PNDMScheduler",
        scheduler=_SD_SCHEDULER | ({"timestep_spacing": "leading", "prediction_type": "epsilon"} if sdxl
                                   else {"skip_prk_steps": True, "set_alpha_to_one": False}),
        extra_components={"image_encoder": None, "feature_extractor": None}
                         | ({"force_zeros_for_empty_prompt": True} if sdxl
                            else {"safety_checker": None, "requires_safety_checker": False}),
    )


def architecture(family: Family | str, scale: Scale) -> Architecture:
    """The component architecture of `family` at `scale`."""
    family = Family(family)
    if family in (Family.FLUX, Family.FLUX_KONTEXT, Family.FLUX_FILL):
        return _flux(family, scale)
    return _stable_diffusion(family, scale)
