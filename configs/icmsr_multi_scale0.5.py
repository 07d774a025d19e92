# ICM-SR with adapter scale 0.5 (Table 4, middle row): the adapter features are halved.
_base_ = ['./icmsr_multi.py']

model = dict(regularizer=dict(adapter_scale=0.5))
