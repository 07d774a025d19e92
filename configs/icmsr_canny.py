# ICM-SR-canny (Table 2): F_c = Canny edges only, through the TencentARC Canny adapter.
_base_ = ['./icmsr_multi.py']

model = dict(condition=dict(kind='canny', adapters=[{{_base_.adapter_canny}}], weights=None))
