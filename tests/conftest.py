import os

# Triton's interpreter must be chosen before triton is imported anywhere; on a
# machine without a GPU the Triton kernels are tested on the CPU through it.
if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "" and os.path.exists("/dev/nvidia0"):
    pass
else:
    os.environ.setdefault("TRITON_INTERPRET", "1")
