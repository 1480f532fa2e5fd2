"""Under pytest-xdist (`make test` runs one worker per core), one thread per worker and per notebook kernel.

The workers share the cores, and two threads in each would oversubscribe them; these small networks
gain little from a second thread anyway. The cells that nbval checks print what does not depend on
the thread count; the notebooks' other saved outputs come from runs with torch's default threads, and
a trained number can differ in its last digits with another thread count (a convolution adds its
terms in an order that depends on it).
"""

import os

import torch

if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the notebook kernels that nbval starts
    torch.set_num_threads(1)
