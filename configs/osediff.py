# OSEDiff (Tables 1, 2, 4 "OSDiff/OSEDiff†"): the text-conditioned VSD baseline, trained
# with the same backbone, data and schedule. Equivalent to adapter scale 0 (Table 4): the
# adapters and the condition extractor are dropped altogether, which gives the same
# regulariser without computing (or downloading) the adapters.
_base_ = ['./icmsr_multi.py']

model = dict(
    adapter=None,
    adapter_weights=None,
    regularizer=dict(adapter_scale=0.0),
    # The fake score OSEDiff's code effectively trains: only the mid-block LoRA is active
    # (its last add_adapter call); see the fidelity ledger in docs/model.md.
    aux_diffusion=dict(lora_preset='osediff_effective'),
    data_preprocessor=dict(condition=None))
