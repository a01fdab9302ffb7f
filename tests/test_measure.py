import torch

from decinv.core.measure import measure


def test_cpu_peak_memory_sees_a_temporary_allocation():
    with measure("cpu") as m:
        a = torch.ones(50_000_000)  # 200 MB
        del a
    assert m.peak_memory_bytes is not None and m.peak_memory_bytes >= 190e6
    assert m.seconds > 0
    with measure("cpu") as small:
        torch.ones(1000)
    assert small.peak_memory_bytes < 50e6  # freed memory from the first block does not count again
