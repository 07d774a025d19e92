# ICM-SR (icmsr_multi.py, the paper's model and recipe) with every memory saver on, for
# training at 512 px, batch 4, on one 24 GB GPU: bf16 frozen weights, bf16 autocast on
# both optimizers, gradient checkpointing of the generator's UNet and VAE, 8-bit AdamW.
# The switches and what each saves: configs/_base_/memory_savers.py, docs/training.md.
# Train: python tools/train.py configs/icmsr_multi_24gb.py
_base_ = ['./icmsr_multi.py', './_base_/memory_savers.py']

model = {{_base_.memory_savers_model}}
optim_wrapper = {{_base_.memory_savers_optim_wrapper}}
