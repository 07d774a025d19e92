# Memory savers: the switches that fit ICM-SR's training on one 24 GB GPU (docs/training.md,
# "Memory savers"). Each is one value below; a config turns them on with
#   _base_ = ['./icmsr_multi.py', './_base_/memory_savers.py']
#   model = {{_base_.memory_savers_model}}
#   optim_wrapper = {{_base_.memory_savers_optim_wrapper}}
# and a run changes one with --cfg-options, e.g.
#   model.generator.gradient_checkpointing=False
#   optim_wrapper.generator.optimizer.type=AdamW optim_wrapper.aux_diffusion.optimizer.type=AdamW

# Frozen SD parts (UNet, VAE, text encoder, T2I-Adapters) stored in bf16: half their
# memory. The trained LoRA, the generator's conv_in copy and the optimizer states stay
# float32. None keeps float32.
frozen_dtype = 'bfloat16'
# Forward passes of both optimizers (generator + teacher/fake score, aux model) under
# torch.autocast in this dtype; no loss scaler is needed for bf16. 'float32': off.
amp_dtype = 'bfloat16'
# The generator's UNet and VAE keep only block inputs and recompute the rest in backward
# (under the generator's LoRA role; the shared UNet's aux pass is recomputed too).
gradient_checkpointing = True
# bitsandbytes' AdamW with 8-bit moments (optional dependency). LoRA states are small
# (8.4 M trained values, 67 MB of float32 moments), so this saves tens of MB only.
optimizer_type = 'AdamW8bit'

memory_savers_model = dict(
    unet=dict(torch_dtype=frozen_dtype),
    vae=dict(torch_dtype=frozen_dtype),
    text_encoder=dict(torch_dtype=frozen_dtype),
    condition=dict(torch_dtype=frozen_dtype),
    generator=dict(gradient_checkpointing=gradient_checkpointing),
)
memory_savers_optim_wrapper = dict(
    generator=dict(type='AutocastNonFiniteGuardOptimWrapper', dtype=amp_dtype,
                   optimizer=dict(type=optimizer_type)),
    aux_diffusion=dict(type='AutocastNonFiniteGuardOptimWrapper', dtype=amp_dtype,
                       optimizer=dict(type=optimizer_type)),
)
