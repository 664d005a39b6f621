"""Whether one image's privatize call gets faster with the network's weights on transparent huge pages:
``python -m bench.huge_pages``.

A question of the twentieth round (BENCHMARKS.md): any Python step right after a flow pass costs several times
what it costs repeated, as if the pass (whose weights, 6.4 MB for the bundled image networks, pass through the
2 MiB per-core cache) had pushed the interpreter out of the caches, or out of the TLB. Two copies of the model are
loaded in one process: one as the app loads it, one whose parameters and buffers are moved into one 2 MiB-aligned
anonymous mapping advised ``MADV_HUGEPAGE`` (same strides: the convolution weights stay channels-last). Calls
alternate between the two in rounds (the order flips each round), so that the host's slow and fast phases fall on
both alike; the ratio per round (huge pages / as loaded) is the answer. A second part times small operations
right after an encode pass and again at once, with 2 threads and 1 (``bench.call_parts`` does it for 2), for
each copy. Linux only; the kernel must allow ``madvise`` huge pages (/sys/kernel/mm/transparent_hugepage/enabled).
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import sys
import time

import torch

HUGE_PAGE = 2 * 2**20


def on_huge_pages(module: torch.nn.Module) -> mmap.mmap:
    """Move ``module``'s parameters and floating-point buffers into one mapping advised for huge pages (its strides
    kept); returns the mapping, which must outlive the module's use."""
    tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
    sizes = [(t.numel() * t.element_size() + 63) // 64 * 64 for t in tensors]
    total = (sum(sizes) + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    region = mmap.mmap(-1, total + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    whole = torch.frombuffer(region, dtype=torch.uint8)
    offset = (-whole.data_ptr()) % HUGE_PAGE
    for tensor, size in zip(tensors, sizes):
        view = whole[offset:offset + tensor.numel() * tensor.element_size()].view(tensor.dtype)
        view = view.as_strided(tensor.shape, tensor.stride())
        view.copy_(tensor)
        tensor.data = view
        offset += size
    return region


def anon_huge_kib() -> int | None:
    try:
        text = open("/proc/self/smaps_rollup").read()
    except OSError:
        return None
    return int(text.split("AnonHugePages:")[1].split()[0])


def alternate(calls: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Milliseconds per call of each entry of ``calls``, one value per round, the order flipped each round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            start = time.perf_counter_ns()
            for _ in range(per_round):
                calls[name]()
            times[name].append((time.perf_counter_ns() - start) / per_round / 1e6)
    return times


def ratio_summary(base: list[float], other: list[float]) -> str:
    """The median of ``other / base`` over the rounds and its quartiles, as the rounds' lines print them."""
    ratios = [b / a for a, b in zip(base, other)]
    quartiles = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})"


def after_a_pass(model, pixels, labels, repeats: int) -> dict[str, tuple[float, float]]:
    """Median microseconds of small steps right after an encode pass, and again at once."""
    from bench.call_parts import timed_after_a_pass

    steps = {"torch.empty(0)": lambda z: torch.empty(0), "a Python list of 100": lambda z: list(range(100)),
             "[i for i in range(100)]": lambda z: [i for i in range(100)]}
    return timed_after_a_pass(model, pixels, labels, steps, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.huge_pages", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-cinn", help="an image model's name in weights/ or its folder")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20, help="calls per round and copy")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("Linux only (madvise huge pages)")
        return 2
    from bench.__main__ import model_folders
    from bench.compute import image_inputs, load, privatize_call
    from cadp.runtime import configure_allocator

    configure_allocator()  # as the app and the CLIs run
    torch.set_num_threads(2)
    folder = model_folders([args.model])[0]
    loaded, moved = load(str(folder), torch.device("cpu")), load(str(folder), torch.device("cpu"))
    before = anon_huge_kib()
    region = on_huge_pages(moved.model)
    calls = {"as loaded": privatize_call(loaded, 1)[0], "huge pages": privatize_call(moved, 1)[0]}
    for call in calls.values():
        for _ in range(30):
            call()
    print(f"{folder.name}: weights moved to {len(region) // 2**20} MiB advised for huge pages; AnonHugePages "
          f"{before} -> {anon_huge_kib()} KiB")
    times = alternate(calls, args.rounds, args.calls)
    print(f"one image's call, {args.rounds} rounds of {args.calls} calls each: as loaded median "
          f"{statistics.median(times['as loaded']):.3f} ms, huge pages {statistics.median(times['huge pages']):.3f} "
          f"ms; ratio per round median {ratio_summary(times['as loaded'], times['huge pages'])}")
    pixels, labels, _ = image_inputs(loaded.config, 1)
    pixels = pixels.float()
    print("\nsmall steps right after an encode pass and again at once (median us of 300)")
    print("| threads | copy | step | after a pass | again |\n|---|---|---|---|---|")
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for name, copy in (("as loaded", loaded), ("huge pages", moved)):
            for step, (cold, warm) in after_a_pass(copy.model, pixels, labels, 300).items():
                print(f"| {threads} | {name} | {step} | {cold:.1f} | {warm:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
