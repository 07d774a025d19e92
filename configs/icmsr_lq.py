# ICM-SR-lq (Table 2): the dense condition - the LQ image itself (resized to the HQ size)
# - fed to the RGB (colour) adapter. The paper shows this over-constrains the manifold
# and makes VSD degenerate towards SDS (Lemma 1); it is the negative ablation.
_base_ = ['./icmsr_multi.py']

model = dict(condition=dict(kind='lq', adapters=[{{_base_.adapter_color}}], weights=None))
