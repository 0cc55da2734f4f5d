"""Training: the loop every method shares (`loop`), resumable checkpoints, the device and its clocks, and
data parallelism (`parallel`: DDP and FSDP2 under torchrun)."""
