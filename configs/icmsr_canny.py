# ICM-SR-canny (Table 2): F_c = Canny edges only, through the TencentARC Canny adapter.
_base_ = ['./icmsr_multi.py']

model = dict(
    adapter=dict(_delete_=True, type='SDT2IAdapter', from_pretrained={{_base_.adapter_canny}}),
    adapter_weights=None,
    data_preprocessor=dict(condition=dict(mode='canny')))
