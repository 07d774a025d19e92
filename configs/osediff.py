# OSEDiff (Tables 1, 2, 4 "OSDiff/OSEDiff†"): the text-conditioned VSD baseline, trained
# with the same backbone, data and schedule. The teacher has no structural condition
# (adapter scale 0 of Table 4 without computing - or downloading - the adapters).
_base_ = ['./icmsr_multi.py']

model = dict(condition=None)
