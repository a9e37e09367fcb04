"""Speed of Crab's BiGRU on a CPU: ours (two GRUs on padded batches, each sequence reversed within
its length) vs. the plain way (one bidirectional nn.GRU on a packed sequence), forward + backward
on the same batch and weights, with the outputs checked equal.

Usage (from the repository root): python -m benchmarks.bigru [--batch 32] [--hidden 256] [--threads
2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from benchmarks.common import command_line, header, write_section
from crabser.models.blocks import BiGRU


def seconds_per_step(fn, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of forward + backward."""
    times = []
    for _ in range(repeats + 1):
        x.grad = None
        started = time.perf_counter()
        fn(x).sum().backward()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T = 50, 110 only, 2 repeats")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = BiGRU(args.hidden)
    packed_gru = torch.nn.GRU(args.hidden, args.hidden, batch_first=True, bidirectional=True)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(packed_gru, f"{name}_l0").data.copy_(getattr(ours.forward_gru, f"{name}_l0"))
        getattr(packed_gru, f"{name}_l0_reverse").data.copy_(
            getattr(ours.backward_gru, f"{name}_l0")
        )
    rows = ["| frames T | packed nn.GRU (s) | ours (s) | speed-up |", "|---|---|---|---|"]
    repeats = 2 if args.quick else args.repeats
    for frames in (50, 110) if args.quick else (50, 110, 220, 440):
        lengths = torch.randint(frames // 3, frames + 1, (args.batch,))
        lengths[0] = frames
        mask = torch.arange(frames)[None, :] < lengths[:, None]
        x = torch.randn(args.batch, frames, args.hidden, requires_grad=True)

        def packed(
            inputs: torch.Tensor, lengths: torch.Tensor = lengths, frames: int = frames
        ) -> torch.Tensor:
            sequence = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(
                packed_gru(sequence)[0], batch_first=True, total_length=frames
            )[0]

        assert torch.allclose(packed(x), ours(x, mask), atol=1e-5)
        baseline, fast = (
            seconds_per_step(packed, x, repeats),
            seconds_per_step(lambda v, mask=mask: ours(v, mask), x, repeats),
        )
        rows.append(f"| {frames} | {baseline:.3f} | {fast:.3f} | {baseline / fast:.2f}x |")
        print(rows[-1])
    body = (
        header(command_line())
        + f"\nForward + backward of one batch ({args.batch} sequences, hidden {args.hidden}, "
        "lengths uniform in"
        " [T/3, T]), median of the repeats, same weights, outputs checked equal. On a CPU the "
        "packed path's"
        " backward allocates a full-size zero tensor per time step.\n\n" + "\n".join(rows) + "\n"
    )
    write_section("BiGRU: padded two-GRU vs. packed (CPU)", body)


if __name__ == "__main__":
    main()
