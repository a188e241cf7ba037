"""Write a greeting for every name in the input file (flowServ's Hello World)."""

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputfile", required=True)
    parser.add_argument("--outputfile", required=True)
    parser.add_argument("--sleeptime", type=float, default=0.0)
    parser.add_argument("--greeting", default="Hello")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.outputfile) or ".", exist_ok=True)
    with open(args.inputfile, encoding="utf-8") as names, open(
        args.outputfile, "w", encoding="utf-8"
    ) as out:
        for line in names:
            name = line.strip()
            if name:
                out.write(f"{args.greeting} {name}!\n")
                time.sleep(args.sleeptime)


if __name__ == "__main__":
    main()
