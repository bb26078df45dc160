#!/usr/bin/env python3
"""make_corpus.py: writes the seed corpus of the op-stream fuzzer (tests/fuzz/corpus/).

Each seed is a short op stream: byte 0 picks the thread count (multi-threaded
target only), then opcodes (byte % 32, see LLVMFuzzerTestOneInput) each
followed by random argument bytes. Seeds focus on one group of operations
each, plus a few mixed ones; deterministic (seeded)."""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

GROUPS = {
    "malloc": [0, 1, 2, 3, 4, 5, 9, 10, 11],
    "calloc": [6, 9, 0],
    "aligned": [7, 8, 9, 14],
    "realloc": [12, 13, 0, 9, 14],
    "arena": [15, 16, 17, 18, 19, 20, 21],
    "arena_tree": [15, 16, 22, 23, 24, 17, 20],
    "enter": [15, 25, 0, 3, 17, 20, 21],
    "limit": [15, 26, 17, 18, 19, 22],
    "handles": [5, 27, 17, 20, 9],
    "collect": [15, 17, 20, 28, 0, 9],
    "misuse": [29, 0, 17, 15, 9],
    "race": [15, 17, 18, 30, 31, 0, 1],
    "mixed": list(range(32)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.unlink(os.path.join(OUT, name))
    n = 0
    for group, ops in GROUPS.items():
        for k in range(3 if group != "mixed" else 6):
            rng = random.Random(f"{group}-{k}")
            data = bytearray([rng.randrange(256)])
            for _ in range(rng.randrange(20, 120)):
                data.append(rng.choice(ops) + 32 * rng.randrange(8))
                data.extend(rng.randrange(256) for _ in range(rng.randrange(2, 9)))
            with open(os.path.join(OUT, f"seed-{group}-{k}"), "wb") as f:
                f.write(data)
            n += 1
    print(f"make_corpus.py: {n} seeds in {OUT}")


if __name__ == "__main__":
    main()
