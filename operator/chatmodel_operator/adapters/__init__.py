"""The only I/O: Kubernetes (kube), checkpoints (checkpoint) and Triton metrics."""
