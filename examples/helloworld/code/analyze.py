"""Average characters per line and the longest line of the greetings file."""

import argparse
import json
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputfile", required=True)
    parser.add_argument("--outputfile", required=True)
    args = parser.parse_args()
    max_line, total, count = "", 0, 0
    with open(args.inputfile, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            total += len(line)
            count += 1
            if len(line) > len(max_line):
                max_line = line
    results = {"avg_count": total / count if count else 0.0, "max_len": len(max_line),
               "max_line": max_line}
    os.makedirs(os.path.dirname(args.outputfile) or ".", exist_ok=True)
    with open(args.outputfile, "w", encoding="utf-8") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()
