# ICM-SR with adapter scale 0.5 (Table 4, middle row): the adapter features are halved.
_base_ = ['./icmsr_multi.py']

model = dict(condition=dict(scale=0.5))
