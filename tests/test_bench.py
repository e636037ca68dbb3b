"""The memory tracker behind ``make bench`` counts storages exactly (views once, frees)."""

import torch

from unlearn.bench import TensorMemory


def test_tensor_memory_counts_distinct_storages_and_frees():
    tracker = TensorMemory()
    with tracker:
        a = torch.zeros(1000)            # 4000 bytes
        view = a[:10]                    # same storage: not counted again
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        assert tracker.current == 8000
        del b
        assert tracker.current == 4000
        c = a * 2                        # a temporary of 4000 bytes
        del c
    assert tracker.peak == 8000 and tracker.current == 4000
    assert view.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
