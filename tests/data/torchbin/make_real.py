#!/usr/bin/env python3
"""make_real.py — how the torch211_*.bin files here were made (torch 2.11.0+cu130 on an H200
machine): real torch.save output for test_torchbin.c. Run with torch installed, in this folder."""
import torch

a = torch.tensor([[1.0, -2.0, 0.5], [3.25, -0.125, 100.0]], dtype=torch.bfloat16)
b = torch.tensor([[0.1, 0.2], [-0.3, 4.0], [5.5, -6.75]], dtype=torch.float32)
d = {"a.lora_A.weight": a, "b.lora_B.weight": b}
torch.save(d, "plain.bin")                                       # -> torch211_plain.bin
m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2, bias=False)).to(torch.bfloat16)
torch.save(m.state_dict(), "sd.bin")                             # -> torch211_state_dict.bin
base = torch.arange(12, dtype=torch.float16)
mixed = {
    "half": base.view(3, 4), "view": base[5:9], "row": base.view(3, 4)[1:2],  # one shared storage
    "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    "param": torch.nn.Parameter(torch.ones(2, 2)),
    "cuda": torch.full((2, 3), 7.0, dtype=torch.bfloat16, device="cuda"),
}
torch.save(mixed, "mixed.bin")                                   # -> torch211_mixed.bin
torch.save({"t": torch.arange(6.).view(2, 3).t()}, "transposed.bin")         # -> torch211_transposed.bin
torch.save(d, "legacy.bin", _use_new_zipfile_serialization=False)           # -> torch211_legacy.bin
