#!/usr/bin/env python3
"""Generate TPE parity fixtures from the real Optuna TPESampler.

Usage:
    /work/pyref/bin/python tools/gen_tpe_fixtures.py [--out tests/fixtures/hpo/tpe_cases.json]

For each case a study with a fixed trial history (COMPLETE, PRUNED with intermediate values,
RUNNING, a conditional parameter) is built in memory, a current trial is asked, and Optuna's
own internals are queried exactly where TPESampler._sample goes:
  _split_trials -> below/above trial numbers,
  _build_parzen_estimator -> mixture weights and, per parameter, mu/sigma (numeric, in
      Optuna's transformed space) or the categorical weight rows,
  mpe_below.sample(RandomState(seed), n_ei_candidates) -> the candidates,
  _compute_acquisition_func / _compare -> acquisition values and the chosen point.
The script also asserts that this replication equals TPESampler._sample itself with the same
seed. tests/test_tpe.c rebuilds the estimators from the same history with edgeforge's code and
compares (1e-9) and re-scores the stored candidates (same pick).

The fixture records the Optuna and numpy versions and the seeds.
"""
import argparse
import json
import math
import sys
import warnings

import numpy as np
import optuna
from optuna.distributions import (CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as tpe_mod
from optuna.samplers._tpe.probability_distributions import _BatchedCategoricalDistributions
from optuna.trial import TrialState, create_trial

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = {
    "scale": FloatDistribution(0.5, 2.0),
    "rank": IntDistribution(8, 64),
    "lr": FloatDistribution(1e-5, 1e-3, log=True),
    "temperature": FloatDistribution(0.5, 8.0),
    "alpha": FloatDistribution(0.0, 1.0),
    "weight_decay": FloatDistribution(0.0, 2.0),
    "opt": CategoricalDistribution(["adamw", "muon", "sgd"]),
    "bits": IntDistribution(2, 8, step=2),
    "batch": IntDistribution(1, 256, log=True),
    "drop": FloatDistribution(0.0, 0.5, step=0.1),
}
COND = ("beta", FloatDistribution(0.8, 0.99))  # only when opt == "muon"


def objective_value(p):
    v = (p["scale"] - 1.2) ** 2 + ((p["rank"] - 30) / 20.0) ** 2
    v += (math.log10(p["lr"]) + 3.7) ** 2 + (p["temperature"] - 2.0) ** 2 / 10
    v += p["alpha"] * 0.3 + p["weight_decay"] * 0.1 + {"adamw": 0, "muon": -0.2, "sgd": 0.3}[p["opt"]]
    return v


def random_params(rs, dup_ranks):
    p = {}
    p["scale"] = float(rs.uniform(0.5, 2.0))
    # a narrow pool of ranks makes ties, which exercise the tie order of the bandwidth rule
    p["rank"] = int(rs.choice([16, 24, 32, 48])) if dup_ranks else int(rs.randint(8, 65))
    p["lr"] = float(math.exp(rs.uniform(math.log(1e-5), math.log(1e-3))))
    p["temperature"] = float(rs.uniform(0.5, 8.0))
    p["alpha"] = float(rs.uniform(0, 1))
    p["weight_decay"] = float(rs.uniform(0, 2))
    p["opt"] = ["adamw", "muon", "sgd"][rs.randint(3)]
    p["bits"] = int(rs.choice([2, 4, 6, 8]))
    p["batch"] = int(rs.randint(1, 257))
    p["drop"] = float(rs.choice([0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5]))
    return p


def build_study(case, rs):
    direction = "maximize" if case.get("maximize") else "minimize"
    study = optuna.create_study(direction=direction)
    hist = []
    for i in range(case["n_trials"]):
        p = random_params(rs, case.get("dup_ranks", False))
        dists = dict(SPACE)
        if case.get("conditional") and p["opt"] == "muon":
            p[COND[0]] = float(rs.uniform(0.8, 0.99))
            dists[COND[0]] = COND[1]
        v = objective_value(p)
        if case.get("maximize"):
            v = -v
        r = rs.rand()
        inter = {}
        if r < case.get("p_pruned", 0.0):
            state = TrialState.PRUNED
            nsteps = int(rs.randint(0, 5))
            for s in range(nsteps):
                inter[s * 10] = float(v + rs.normal() * 0.1) if rs.rand() > 0.1 else float("nan")
            value = None
        elif r < case.get("p_pruned", 0.0) + case.get("p_running", 0.0):
            state = TrialState.RUNNING
            value = None
        elif r < case.get("p_pruned", 0.0) + case.get("p_running", 0.0) + case.get("p_fail", 0.0):
            state = TrialState.FAIL
            value = None
        else:
            state = TrialState.COMPLETE
            value = float(v)
            if case.get("ties") and i % 4 == 1 and hist:
                value = hist[-1]["value"] if hist[-1]["value"] is not None else value
        t = create_trial(state=state, value=value, params=p, distributions=dists,
                         intermediate_values=inter)
        study.add_trial(t)
        hist.append({"value": value})
    return study


def estimator_json(mpe, names):
    md = mpe._mixture_distribution
    out = {"weights": md.weights.tolist(), "dims": {}}
    for name, d in zip(names, md.distributions):
        if isinstance(d, _BatchedCategoricalDistributions):
            out["dims"][name] = {"cat_weights": d.weights.tolist()}
        else:
            out["dims"][name] = {"mu": np.asarray(d.mu).tolist(),
                                 "sigma": np.asarray(d.sigma).tolist()}
    return out


def argsort_is_stable(mpe):
    # numpy's default argsort is not guaranteed stable; edgeforge breaks ties by trial order.
    ok = True
    for d in mpe._mixture_distribution.distributions:
        if isinstance(d, _BatchedCategoricalDistributions):
            continue
        mus = np.asarray(d.mu)[:-1]
        if not np.array_equal(np.argsort(mus), np.argsort(mus, kind="stable")):
            ok = False
    return ok


def run_case(case):
    rs = np.random.RandomState(case["seed"])
    study = build_study(case, rs)
    kw = dict(n_startup_trials=0, multivariate=case["multivariate"],
              constant_liar=case.get("constant_liar", True), seed=case["seed"])
    for k in ("consider_endpoints", "consider_magic_clip", "prior_weight"):
        if k in case:
            kw[k] = case[k]
    sampler = TPESampler(**kw)
    study.sampler = sampler
    current = study.ask()
    cur_frozen = study._storage.get_trial(current._trial_id)

    trials_out = []
    names = list(SPACE) + [COND[0]]
    for t in study.get_trials(deepcopy=False):
        if t.number == current.number:
            continue
        params = []
        for n in names:
            if n in t.params:
                params.append(t.distributions[n].to_internal_repr(t.params[n]))
            else:
                params.append(None)
        last = None
        if t.intermediate_values:
            s = max(t.intermediate_values)
            iv = t.intermediate_values[s]
            last = [s, None if math.isnan(iv) else iv]
        trials_out.append({"number": t.number, "state": int(t.state), "value": t.value,
                           "params": params, "last": last})

    # search spaces sampled jointly (multivariate) or one parameter at a time (univariate)
    if case["multivariate"]:
        rel = sampler.infer_relative_search_space(study, cur_frozen)
        groups = [dict(rel)]
    else:
        groups = [{n: SPACE[n]} for n in SPACE]
        if case.get("conditional"):
            groups.append({COND[0]: COND[1]})

    draws = []
    for gi, sspace in enumerate(groups):
        seed = case["seed"] * 100 + gi
        # --- replication of TPESampler._sample with Optuna's own pieces ---
        states = [TrialState.COMPLETE, TrialState.PRUNED]
        if sampler._constant_liar:
            states.append(TrialState.RUNNING)
        trials = study._get_trials(deepcopy=False, states=states, use_cache=False)
        trials = [t for t in trials if t.number != current.number]
        n = sum(t.state != TrialState.RUNNING for t in trials)
        gamma = tpe_mod.default_gamma(n)
        below, above = tpe_mod._split_trials(study, trials, gamma)
        l = sampler._build_parzen_estimator(study, sspace, below, handle_below=True)
        g = sampler._build_parzen_estimator(study, sspace, above, handle_below=False)
        rng = np.random.RandomState(seed)
        cand = l.sample(rng, sampler._n_ei_candidates)
        acq = sampler._compute_acquisition_func(cand, l, g)
        best = int(np.argmax(acq))
        # numpy's default argsort (x86-simd-sort) orders tied mus arbitrarily, which moves
        # bandwidths between tied kernels; the strict reference uses a stable argsort, i.e.
        # Optuna with ties kept in trial order (edgeforge's rule). Same candidates for both.
        orig_argsort = np.argsort
        np.argsort = lambda a, *args, **kw: orig_argsort(a, kind="stable")
        try:
            l_s = sampler._build_parzen_estimator(study, sspace, below, handle_below=True)
            g_s = sampler._build_parzen_estimator(study, sspace, above, handle_below=False)
        finally:
            np.argsort = orig_argsort
        acq_s = sampler._compute_acquisition_func(cand, l_s, g_s)
        best_s = int(np.argmax(acq_s))
        # --- the real thing must agree ---
        sampler._rng.rng.seed(seed)
        real = sampler._sample(study, cur_frozen, sspace)
        for k, dist in sspace.items():
            mine = dist.to_external_repr(cand[k][best])
            assert real[k] == mine, (case["name"], k, real[k], mine)
        pnames = list(sspace)
        draws.append({
            "params": pnames,
            "gamma": gamma,
            "below": [t.number for t in below],
            "above": [t.number for t in above],
            "below_est": estimator_json(l_s, pnames),
            "above_est": estimator_json(g_s, pnames),
            "argsort_stable": argsort_is_stable(l) and argsort_is_stable(g),
            "acq_numpy": acq.tolist(),
            "best_numpy": best,
            "candidates": [[float(cand[k][i]) for k in pnames]
                           for i in range(sampler._n_ei_candidates)],
            "acq": acq_s.tolist(),
            "best": best_s,
        })
    cfg = {k: case[k] for k in ("consider_endpoints", "consider_magic_clip", "prior_weight")
           if k in case}
    return {"name": case["name"], "seed": case["seed"], "maximize": bool(case.get("maximize")),
            "multivariate": case["multivariate"],
            "constant_liar": case.get("constant_liar", True), "config": cfg,
            "current_number": current.number, "trials": trials_out, "draws": draws}


CASES = [
    {"name": "uni_basic", "seed": 1, "n_trials": 12, "multivariate": False},
    {"name": "multi_basic", "seed": 2, "n_trials": 12, "multivariate": True},
    {"name": "uni_pruned_running", "seed": 3, "n_trials": 20, "multivariate": False,
     "p_pruned": 0.25, "p_running": 0.15, "p_fail": 0.05},
    {"name": "multi_pruned_running", "seed": 4, "n_trials": 20, "multivariate": True,
     "p_pruned": 0.25, "p_running": 0.15},
    {"name": "uni_no_liar", "seed": 5, "n_trials": 16, "multivariate": False,
     "p_running": 0.2, "constant_liar": False},
    {"name": "uni_maximize_ties", "seed": 6, "n_trials": 16, "multivariate": False,
     "maximize": True, "ties": True, "dup_ranks": True},
    {"name": "multi_many", "seed": 7, "n_trials": 60, "multivariate": True, "p_pruned": 0.1},
    {"name": "uni_many", "seed": 8, "n_trials": 45, "multivariate": False},
    {"name": "uni_endpoints", "seed": 9, "n_trials": 14, "multivariate": False,
     "consider_endpoints": True},
    {"name": "uni_noclip_prior", "seed": 10, "n_trials": 14, "multivariate": False,
     "consider_magic_clip": False, "prior_weight": 0.5},
    {"name": "uni_conditional", "seed": 11, "n_trials": 18, "multivariate": False,
     "conditional": True},
    {"name": "multi_conditional", "seed": 12, "n_trials": 18, "multivariate": True,
     "conditional": True},
    {"name": "uni_one_trial", "seed": 13, "n_trials": 1, "multivariate": False},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/hpo/tpe_cases.json")
    args = ap.parse_args()
    space = [{"name": n, "distribution": distribution_to_json(d)} for n, d in SPACE.items()]
    space.append({"name": COND[0], "distribution": distribution_to_json(COND[1])})
    cases = [run_case(c) for c in CASES]
    meta = {"generator": "tools/gen_tpe_fixtures.py", "optuna": optuna.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0],
            "note": "n_startup_trials=0 so every draw is TPE; seeds per case in 'seed', "
                    "candidate RandomState seed = case seed * 100 + draw index"}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "space": space, "cases": cases}, f, allow_nan=True)
    print(f"wrote {args.out}: {len(cases)} cases, "
          f"{sum(len(c['draws']) for c in cases)} draws")


if __name__ == "__main__":
    main()
