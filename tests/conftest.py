"""Test-session settings shared by every test module."""

import os

# The tests compare masks against fixed expectations, so they run the encoder in fp32 on every CPU
# (``auto`` could pick bf16 where a CPU runs it natively and passes the gate). The precision choice
# itself is tested with explicit ``precision=`` arguments (tests/test_precision.py).
os.environ.setdefault("PROMPTSEG_PRECISION", "fp32")
