#!/usr/bin/env python3
"""Plain text for calibration / held-out evaluation from the HellaSwag validation set that
ships in data/benchmarks/hellaswag (MIT): each item's context followed by its gold ending,
one document per item (blank-line separated, the format calib.h reads as plain text).

Usage:
    python3 tools/hellaswag_text.py OUT_CALIB.txt OUT_HELDOUT.txt [--split 5000]

Items [0, split) go to the calibration file, items [split, end) to the held-out file, so the
held-out text is never seen during calibration. Deterministic (file order, no sampling).
"""
import argparse
import json

SRC = "data/benchmarks/hellaswag/hellaswag_val_lmeval_approx.jsonl"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("calib")
    ap.add_argument("heldout")
    ap.add_argument("--split", type=int, default=5000)
    a = ap.parse_args()
    docs = []
    with open(SRC) as f:
        for line in f:
            r = json.loads(line)
            docs.append(" ".join((r["query"] + " " + r["choices"][r["gold"]]).split()))
    for path, part in [(a.calib, docs[: a.split]), (a.heldout, docs[a.split:])]:
        with open(path, "w") as f:
            f.write("\n\n".join(part) + "\n")
        print(f"{path}: {len(part)} documents")


if __name__ == "__main__":
    main()
