import os

# Triton's interpreter must be chosen before triton is imported anywhere: without a
# GPU the Triton kernels are tested on the CPU through it; with one, compiled.
if not os.path.exists("/dev/nvidia0") or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
    os.environ.setdefault("TRITON_INTERPRET", "1")
