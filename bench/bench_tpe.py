#!/usr/bin/env python3
"""Optuna side of the TPE benchmark, and the comparison with edgeforge's numbers.

Usage:
    build-hpo/bench_tpe --seeds 30 > bench/bench_tpe.edgeforge.jsonl      (see bench/bench_tpe.c)
    /work/pyref/bin/python bench/bench_tpe.py --seeds 30 \
        --edgeforge bench/bench_tpe.edgeforge.jsonl --out bench/bench_tpe.optuna.jsonl > table.md

Runs optuna.samplers.TPESampler(seed=s) (Optuna's defaults) and RandomSampler(seed=s) for 64
trials on Branin, Hartmann-6, Rosenbrock-4D and a mixed int/log space shaped like the paper's
Table 3 (same definitions as bench_tpe.c), records the best value after 16 and 64 trials and
the sampler time per trial (study.ask + suggest, in-memory storage), then prints a markdown
table: mean +- standard error per sampler and budget, the edgeforge-minus-Optuna difference
with a 95% confidence interval and a two-sided Mann-Whitney U p-value, and the speed ratio.
"""
import argparse
import json
import math
import sys
import time
import warnings

import numpy as np
import optuna
import scipy
from scipy import stats

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def branin(x):
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
     [17, 8, 0.05, 10, 0.1, 14]]
P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]


def hartmann6(x):
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - 1e-4 * P[i][j]) ** 2 for j in range(6)))
                for i in range(4))


def rosenbrock4(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3))


def table3_like(x):
    f = (x[0] - 1.25) ** 2 + ((x[1] - 24) / 28.0) ** 2 + (math.log10(x[2]) + 3.6) ** 2
    f += ((x[3] - 2.0) / 3.75) ** 2 + (x[4] - 0.7) ** 2 + ((x[5] - 0.1) / 2) ** 2
    return f


def suggest(trial, func):
    if func == "branin":
        return [trial.suggest_float("x0", -5, 10), trial.suggest_float("x1", 0, 15)]
    if func == "hartmann6":
        return [trial.suggest_float(f"x{i}", 0, 1) for i in range(6)]
    if func == "rosenbrock4":
        return [trial.suggest_float(f"x{i}", -5, 10) for i in range(4)]
    return [trial.suggest_float("scale", 0.5, 2.0), trial.suggest_int("rank", 8, 64),
            trial.suggest_float("lr", 1e-5, 1e-3, log=True),
            trial.suggest_float("temperature", 0.5, 8.0), trial.suggest_float("alpha", 0.0, 1.0),
            trial.suggest_float("weight_decay", 0.0, 2.0)]


FUNCS = {"branin": branin, "hartmann6": hartmann6, "rosenbrock4": rosenbrock4,
         "table3": table3_like}


def run_optuna(func, sampler_name, seed, n_trials):
    sampler = (optuna.samplers.TPESampler(seed=seed) if sampler_name == "optuna_tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    best, best16, t_sampler = math.inf, math.inf, 0.0
    for i in range(n_trials):
        t0 = time.perf_counter()
        trial = study.ask()
        x = suggest(trial, func)
        t_sampler += time.perf_counter() - t0
        v = FUNCS[func](x)
        study.tell(trial, v)
        best = min(best, v)
        if i == 15:
            best16 = best
    return {"func": func, "sampler": sampler_name, "seed": seed, "best16": best16,
            "best64": best, "suggest_us": t_sampler / n_trials * 1e6}


def mean_se(v):
    v = np.asarray(v, dtype=float)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--edgeforge", required=True)
    ap.add_argument("--out", default="bench/bench_tpe.optuna.jsonl")
    ap.add_argument("--reuse", action="store_true", help="read --out instead of rerunning Optuna")
    ap.add_argument("--funcs", default=",".join(FUNCS), help="comma-separated subset")
    args = ap.parse_args()
    ours = [json.loads(l) for l in open(args.edgeforge)]
    if args.reuse:
        theirs = [json.loads(l) for l in open(args.out)]
    else:
        theirs = []
        for func in args.funcs.split(","):
            for s in ("optuna_tpe", "optuna_random"):
                for seed in range(args.seeds):
                    theirs.append(run_optuna(func, s, seed, args.trials))
                print(f"{func} {s} done", file=sys.stderr)
        with open(args.out, "w") as f:
            for r in theirs:
                f.write(json.dumps(r) + "\n")
    rows = ours + theirs
    print(f"Optuna {optuna.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; "
          f"{args.seeds} seeds, {args.trials} trials; minimization; "
          f"mean +- standard error of the best value so far.\n")
    print("| function | budget | edgeforge TPE | Optuna TPE | diff (ef - optuna) [95% CI] | "
          "Mann-Whitney p | edgeforge random | Optuna random |")
    print("|---|---|---|---|---|---|---|---|")
    funcs = args.funcs.split(",")
    for func in funcs:
        for budget in ("best16", "best64"):
            def get(s):
                return [r[budget] for r in rows if r["func"] == func and r["sampler"] == s]
            et, ot, er, orr = get("edgeforge_tpe"), get("optuna_tpe"), get("edgeforge_random"), get("optuna_random")
            (m1, s1), (m2, s2) = mean_se(et), mean_se(ot)
            d = m1 - m2
            se = math.sqrt(s1 ** 2 + s2 ** 2)
            p = stats.mannwhitneyu(et, ot, alternative="two-sided").pvalue
            fmt = "{:.4g} +- {:.2g}"
            print(f"| {func} | {budget[4:]} | {fmt.format(m1, s1)} | {fmt.format(m2, s2)} | "
                  f"{d:+.4g} [{d - 1.96 * se:+.3g}, {d + 1.96 * se:+.3g}] | {p:.2f} | "
                  f"{fmt.format(*mean_se(er))} | {fmt.format(*mean_se(orr))} |")
    print("\n| function | edgeforge TPE us/suggest | Optuna TPE us/trial (ask+suggest) | speed-up |")
    print("|---|---|---|---|")
    for func in funcs:
        a = np.mean([r["suggest_us"] for r in rows if r["func"] == func and r["sampler"] == "edgeforge_tpe"])
        b = np.mean([r["suggest_us"] for r in rows if r["func"] == func and r["sampler"] == "optuna_tpe"])
        print(f"| {func} | {a:.0f} | {b:.0f} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
