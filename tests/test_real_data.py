"""Real data: a small Residual Attention Network on Fashion-MNIST (Debian's dataset-fashion-mnist).

A fixed budget (iterations, batch, subset, seed), never a wall-clock assertion. CI installs the
package and sets MINIRATTN_REQUIRE_REAL_DATA=1, so there a missing data set fails instead of skipping.
"""
import os

import pytest

from minirattn.data.fashion_mnist import DEBIAN_DIR, FILES
from minirattn.train import train_cifar

HAVE = all(os.path.exists(os.path.join(DEBIAN_DIR, f)) for f in FILES)
REQUIRED = os.environ.get("MINIRATTN_REQUIRE_REAL_DATA") == "1"


@pytest.mark.slow
def test_small_attention_network_reaches_85_percent_on_fashion_mnist():
    if not HAVE and not REQUIRED:
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    r = train_cifar(arch="attention56_small", dataset="fashion-mnist", iterations=300, batch_size=32,
                    eval_every=300, n_train=20000, n_test=1000, seed=0, progress=False)
    assert r.config["num_classes"] == 10 and r.config["parameters"] > 0
    assert r.final_test_accuracy >= 0.85, r.summary()
