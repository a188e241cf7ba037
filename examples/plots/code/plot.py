"""Post-processing: a bar chart (SVG, drawn by hand) and a CSV table of the best run of
each group, from the runs folder flowbatch stages (runs.json in rank order, and each
run's result file at <run id>/results/score.json)."""

import argparse
import csv
import json
import os
from xml.sax.saxutils import escape

WIDTH, BAR, GAP, LEFT, TOP = 640, 26, 10, 150, 30

# CSV injection: a spreadsheet runs a cell that starts like a formula ("=HYPERLINK(...)")
# when the file is opened, and group names are chosen by participants. A text cell that
# starts with one of these, after any spaces or NULs, gets a leading "'" (flowbatch's own
# leaderboard.csv follows the same rule: OWASP's = + - @ TAB CR, plus LF).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_text(text: str) -> str:
    return "'" + text if text.lstrip(" \0")[:1] in FORMULA_START else text


def load(runs_dir: str) -> list[dict]:
    with open(os.path.join(runs_dir, "runs.json"), encoding="utf-8") as fh:
        runs = json.load(fh)
    for run in runs:
        with open(
            os.path.join(runs_dir, run["id"], "results", "score.json"), encoding="utf-8"
        ) as fh:
            run["score"] = json.load(fh)
    return runs


def svg(runs: list[dict]) -> str:
    height = TOP + len(runs) * (BAR + GAP) + 30
    top_error = max((r["score"]["error"] for r in runs), default=0.0) or 1.0
    scale = (WIDTH - LEFT - 90) / top_error
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="18" fill="#333">'
        "absolute error of the estimate of pi (lower is better)</text>",
    ]
    for i, run in enumerate(runs):
        y = TOP + i * (BAR + GAP)
        error = run["score"]["error"]
        width = max(1.0, error * scale)
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + BAR * 0.68}" text-anchor="end" fill="#333">'
            f"{i + 1}. {escape(run['name'])}</text>"
        )
        parts.append(
            f'<rect x="{LEFT}" y="{y}" width="{width:.1f}" height="{BAR}" fill="#1f5fbf" rx="3"/>'
        )
        parts.append(
            f'<text x="{LEFT + width + 6:.1f}" y="{y + BAR * 0.68}" fill="#333">{error:.5f}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", required=True)
    parser.add_argument("--outdir", required=True)
    args = parser.parse_args()
    runs = load(args.runs)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "errors.svg"), "w", encoding="utf-8") as fh:
        fh.write(svg(runs))
    with open(os.path.join(args.outdir, "summary.csv"), "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "group", "run", "estimate", "error", "samples"])
        for i, run in enumerate(runs, start=1):
            score = run["score"]
            writer.writerow(
                [
                    i,
                    csv_text(run["name"]),
                    run["id"],
                    score["estimate"],
                    score["error"],
                    score["samples"],
                ]
            )
    print(f"plotted {len(runs)} runs")


if __name__ == "__main__":
    main()
