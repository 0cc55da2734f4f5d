"""Benchmarks: one interleaved runner (`runner`) behind `meltr bench meltr-step` (`meltr_step`) and
`meltr bench scaling` (`scaling`); FLOP counts, MFU and datasheet peaks (`flops`)."""
