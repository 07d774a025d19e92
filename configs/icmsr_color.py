# ICM-SR-color (Table 2): F_c = the 8x8 colormap only, through the TencentARC colour adapter.
_base_ = ['./icmsr_multi.py']

model = dict(
    adapter=dict(_delete_=True, type='SDT2IAdapter', from_pretrained={{_base_.adapter_color}}),
    adapter_weights=None,
    data_preprocessor=dict(condition=dict(mode='colormap')))
