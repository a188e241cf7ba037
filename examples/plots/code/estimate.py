"""Estimate pi from random points in the unit square; write the estimate and its error."""

import argparse
import json
import math
import os
import random


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--outputfile", required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    inside = sum(1 for _ in range(args.samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    estimate = 4.0 * inside / args.samples
    os.makedirs(os.path.dirname(args.outputfile) or ".", exist_ok=True)
    with open(args.outputfile, "w", encoding="utf-8") as fh:
        json.dump(
            {"estimate": estimate, "error": abs(estimate - math.pi), "samples": args.samples}, fh
        )


if __name__ == "__main__":
    main()
