#!/usr/bin/env python3
"""lm-evaluation-harness 0.4.9.1 HF-backend side of bench/bench_eval.sh (timing only).

Loads the GGUF in transformers (float32, CPU) through lm-eval's HFLM exactly as
tools/check_eval_parity.py does (offline data loader of tools/gen_eval_fixtures.py), runs
simple_evaluate on --tasks with --limit, and prints one JSON line: documents, load and
evaluation seconds, torch threads, acc / acc_norm per task.

Usage: OMP_NUM_THREADS=T python bench/bench_eval_lmeval.py MODEL.gguf --tasks a,b --limit N \
           --threads T [--batch 8]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from check_eval_parity import hflm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    import torch
    import transformers
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    lm = hflm(a.model, a.batch)  # first: it prepares lm-eval's imports
    import lm_eval
    from lm_eval.tasks import TaskManager
    t1 = time.perf_counter()
    res = lm_eval.simple_evaluate(model=lm, tasks=a.tasks.split(","), limit=a.limit,
                                  task_manager=TaskManager(), bootstrap_iters=0)
    t2 = time.perf_counter()
    scores = {t: {m: v for m, v in r.items() if m in ("acc,none", "acc_norm,none")}
              for t, r in res["results"].items()}
    docs = sum(v["effective"] for v in res.get("n-samples", {}).values()) or \
        a.limit * len(a.tasks.split(","))
    print(json.dumps({"documents": docs, "load_s": t1 - t0, "eval_s": t2 - t1,
                      "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "scores": scores}))


if __name__ == "__main__":
    main()
