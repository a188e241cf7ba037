"""Average characters per line and the longest line (seed Hello World demo)."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("-i", "--inputfile", required=True)
parser.add_argument("-o", "--outputfile", required=True)
args = parser.parse_args()
lines = [line.strip() for line in open(args.inputfile)]
longest = max(lines, key=len, default="")
result = {
    "avg_count": sum(map(len, lines)) / max(len(lines), 1),
    "max_len": len(longest),
    "max_line": longest,
}
os.makedirs(os.path.dirname(args.outputfile) or ".", exist_ok=True)
with open(args.outputfile, "w") as f:
    json.dump(result, f)
