"""Write a greeting for every name in the input file (seed Hello World demo)."""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--infile", required=True)
parser.add_argument("--outfile", required=True)
parser.add_argument("--sleeptime", type=float, default=0)
parser.add_argument("--greeting", default="Hello")
args = parser.parse_args()
os.makedirs(os.path.dirname(args.outfile) or ".", exist_ok=True)
with open(args.infile) as fin, open(args.outfile, "w") as fout:
    for line in fin:
        name = line.strip()
        if name:
            fout.write(f"{args.greeting} {name}!\n")
            time.sleep(args.sleeptime)
