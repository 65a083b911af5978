#!/usr/bin/env python3
"""The card's two ceilings, measured once per card (PyTorch on the GPU machine): device-to-device copy
bandwidth (bytes read + written) and dense bf16 matrix throughput. Median of timed repeats on random
data after warm-up; prints one JSON line."""
import json

import torch


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    n = 2 << 30  # 2 GiB of bytes per copy
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    t_copy = timed(lambda: b.copy_(a))
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    t_mm = timed(lambda: x @ y)
    print(json.dumps({
        "device": torch.cuda.get_device_name(0),
        "d2d_copy_GBps": round(2 * n / t_copy / 1e9, 1),
        "bf16_gemm_8192_TFLOPs": round(2 * m ** 3 / t_mm / 1e12, 1),
    }))


if __name__ == "__main__":
    main()
