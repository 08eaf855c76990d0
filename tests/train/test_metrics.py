"""MFU from the FLOP count and the card's peak; the peak table picks the specific card name first."""
import time

import pytest
import torch

from gdn.train.metrics import BF16_PEAK_FLOPS, ThroughputMeter, bf16_peak_flops


def test_mfu_is_tokens_per_device_times_flops_over_peak():
    meter = ThroughputMeter(world_size=4, training_flops_per_token=6_000, peak_flops=1e9)
    meter.add(tokens=40_000, data_wait_s=0.0)
    meter.add(tokens=40_000, data_wait_s=0.0)
    time.sleep(0.2)
    reading = meter.read()
    elapsed = 80_000 / reading.tokens_per_s
    assert reading.tokens_per_s_per_device == pytest.approx(reading.tokens_per_s / 4)
    assert reading.mfu == pytest.approx(reading.tokens_per_s_per_device * 6_000 / 1e9)
    assert reading.step_time_s == pytest.approx(elapsed / 2)
    assert 0.19 < elapsed < 2


def test_data_wait_share_and_no_mfu_without_a_peak():
    meter = ThroughputMeter(world_size=1, training_flops_per_token=6_000, peak_flops=None)
    time.sleep(0.1)
    meter.add(tokens=10, data_wait_s=0.05)
    reading = meter.read()
    assert reading.mfu is None and "train/mfu" not in reading.as_metrics()
    assert 0.05 / 0.5 < reading.data_wait_share <= 0.5


def test_peak_table():
    assert bf16_peak_flops(torch.device("cpu")) is None
    names = [key for key, _ in BF16_PEAK_FLOPS]
    assert names.index("H100 PCIe") < names.index("H100") and dict(BF16_PEAK_FLOPS)["H100"] == 989e12
