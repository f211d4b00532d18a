"""Real data: a small Residual Attention Network on Fashion-MNIST (Debian's dataset-fashion-mnist).

A fixed budget (iterations, batch, subset, seed), never a wall-clock assertion. CI installs the
package and sets MINIRATTN_REQUIRE_REAL_DATA=1, so there a missing data set fails instead of skipping.
"""
import os

import pytest

from minirattn.data.fashion_mnist import DEBIAN_DIR, FILES
from minirattn.training import train_cifar

HAVE = all(os.path.exists(os.path.join(DEBIAN_DIR, f)) for f in FILES)
REQUIRED = os.environ.get("MINIRATTN_REQUIRE_REAL_DATA") == "1"


@pytest.mark.slow
def test_small_attention_network_reaches_85_percent_on_fashion_mnist():
    if not HAVE and not REQUIRED:
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    # Batch 64 at lr 0.2, no augmentation, the paper's schedule scaled to the run (milestones at
    # 40% and 60%). The narrow network learns Fashion-MNIST slowly; measured here: 800 iterations
    # 84.8%, 1000 iterations 85.4% (5000 test images), so 1400 for a margin. The full 10,000-image
    # test set keeps the standard error of the measurement near 0.35%.
    r = train_cifar(arch="attention56_small", dataset="fashion-mnist", iterations=1400, batch_size=64, lr=0.2,
                    eval_every=1400, n_train=60000, seed=0, progress=False, augment=False)
    assert r.config["num_classes"] == 10 and r.config["parameters"] > 0
    assert r.final_test_accuracy >= 0.85, r.summary()
