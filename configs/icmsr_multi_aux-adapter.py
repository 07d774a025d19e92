# ICM-SR whose auxiliary fake-score model eps_psi is also trained WITH the T2I-Adapter
# features (Table 5, "T2I-Adapter ✓"); the paper's choice is without (icmsr_multi.py).
_base_ = ['./icmsr_multi.py']

model = dict(aux_diffusion=dict(use_adapter=True))
