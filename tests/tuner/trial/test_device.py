from __future__ import annotations

import torch

from tuner.trial import device


def test_cpu_trial_takes_its_share_of_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        assert device.set_up(1, 0, str(tmp_path), str(tmp_path / "cache")) == {}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_out_of_memory_message_names_the_cap_and_the_fixes():
    message = device.out_of_memory_message(0.25, RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore"))
    assert "capped at 22% of the GPU (resources.gpu=0.25)" in message
    assert "per_device_train_batch_size" in message and "Tried to allocate 2 GiB" in message
    assert "whole GPU" in device.out_of_memory_message(1, RuntimeError(""))
