# ICM-SR-color (Table 2): F_c = the colormap only, through the TencentARC colour adapter.
_base_ = ['./icmsr_multi.py']

model = dict(condition=dict(kind='colormap', adapters=[{{_base_.adapter_color}}], weights=None))
