# OSEDiff (Tables 1, 2, 4 "OSDiff/OSEDiff†"): the text-conditioned VSD baseline, trained
# with the same backbone, data and schedule. The teacher has no structural condition
# (adapter scale 0 of Table 4 without computing - or downloading - the adapters).
_base_ = ['./icmsr_multi.py']

model = dict(
    condition=None,
    # The fake score OSEDiff's code effectively trains: only the mid-block LoRA is active
    # (its last add_adapter call); see the fidelity ledger in docs/model.md.
    aux_diffusion=dict(lora_preset='osediff_effective'))
