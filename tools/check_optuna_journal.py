#!/usr/bin/env python3
"""Optuna <-> edgeforge journal compatibility: fixture writer and checker.

Usage:
    # 1. write a study with Optuna (all trial states, params of every distribution kind,
    #    intermediate values incl. NaN, attrs) and the expected replay as JSON:
    /work/pyref/bin/python tools/check_optuna_journal.py write \
        tests/fixtures/hpo/optuna_journal.log tests/fixtures/hpo/optuna_journal_expected.json

    # 2. load a journal (e.g. written by `edgeforge tune`) with Optuna and compare it with
    #    edgeforge's own view (`edgeforge tune --show --json`):
    /work/pyref/bin/python tools/check_optuna_journal.py check JOURNAL STUDY EDGEFORGE_JSON

    # 3. let Optuna continue a study (e.g. one edgeforge started), N more trials:
    /work/pyref/bin/python tools/check_optuna_journal.py continue JOURNAL STUDY N

    # 6. optuna-dashboard (pip install optuna-dashboard) serves the study: its REST API is
    #    queried in-process (no server) for the study list and every trial:
    /work/pyref/bin/python tools/check_optuna_journal.py dashboard STORAGE

    # 5. median-pruner parity fixture: studies with random learning curves (NaNs, gaps,
    #    minimize and maximize) and RUNNING probe trials with Optuna's MedianPruner verdicts:
    /work/pyref/bin/python tools/check_optuna_journal.py write-pruner \
        tests/fixtures/hpo/pruner_journal.log tests/fixtures/hpo/pruner_expected.json

    # 4. an Optuna worker sharing a study with edgeforge workers (space x float [0,1],
    #    y int [0,5], objective (x-0.3)^2+(y-2)^2 like tests/test_tune_workers.c):
    /work/pyref/bin/python tools/check_optuna_journal.py worker STORAGE STUDY N

JOURNAL/STORAGE: a journal file path, journal:PATH, or redis://HOST:PORT[/DB][?prefix=P].

'check' exits 1 on any difference in trial numbers, states, values, params, distributions or
intermediate values, and prints what it compared. The written fixture records the Optuna
version and seed.
"""
import json
import math
import os
import sys
import warnings

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def storage(url):
    """journal:PATH, PATH, or redis://HOST:PORT[/DB][?prefix=P] (edgeforge's --storage forms)."""
    if url.startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend
        base, _, query = url.partition("?")
        prefix = query[len("prefix="):] if query.startswith("prefix=") else ""
        return JournalStorage(JournalRedisBackend(base, prefix=prefix))
    if url.startswith("journal:"):
        url = url[len("journal:"):]
    return JournalStorage(JournalFileBackend(url))


def dump_study(study):
    out = []
    for t in study.get_trials(deepcopy=False):
        out.append({
            "number": t.number,
            "state": int(t.state),
            "value": t.value if t.values is not None and len(t.values) == 1 else None,
            "params": {k: t.distributions[k].to_internal_repr(v) for k, v in t.params.items()},
            "distributions": {k: json.loads(distribution_to_json(d))
                              for k, d in t.distributions.items()},
            "intermediate": {str(k): (None if isinstance(v, float) and math.isnan(v) else v)
                             for k, v in t.intermediate_values.items()},
            "user_attrs": t.user_attrs,
        })
    return out


def write(log_path, expected_path):
    for p in (log_path, log_path + ".lock"):
        if os.path.exists(p):
            os.remove(p)
    st = storage(log_path)
    # a study created then deleted keeps its slot in the id sequence
    tmp = optuna.create_study(study_name="scratch", storage=st)
    tmp.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    optuna.delete_study(study_name="scratch", storage=st)

    sampler = optuna.samplers.TPESampler(seed=42, n_startup_trials=4)
    study = optuna.create_study(study_name="paper", storage=st, sampler=sampler,
                                direction="minimize")
    study.set_user_attr("paper", "Table 3")

    def objective(trial):
        scale = trial.suggest_float("scale", 0.5, 2.0)
        rank = trial.suggest_int("rank", 8, 64)
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        temp = trial.suggest_float("temperature", 0.5, 8.0)
        alpha = trial.suggest_float("alpha", 0.0, 1.0)
        wd = trial.suggest_float("weight_decay", 0.0, 2.0)
        opt = trial.suggest_categorical("opt", ["adamw", "muon"])
        v = (scale - 1.2) ** 2 + ((rank - 30) / 20) ** 2 + (math.log10(lr) + 3.7) ** 2
        v += temp / 10 + alpha * 0.3 + wd * 0.1 + (0.1 if opt == "adamw" else 0.0)
        trial.set_user_attr("note", f"trial {trial.number}")
        for step in range(3):
            trial.report(v + 1.0 / (step + 1), step)
        if trial.number == 5:
            trial.report(float("nan"), 3)
            raise optuna.TrialPruned()
        if trial.number == 7:
            raise RuntimeError("objective crashed")  # -> FAIL
        return v

    study.optimize(objective, n_trials=10, catch=(RuntimeError,))
    # a RUNNING trial left behind by a dead worker, and a WAITING (enqueued) one
    t = study.ask()
    t.suggest_float("scale", 0.5, 2.0)
    study.enqueue_trial({"scale": 1.0, "rank": 32, "lr": 1e-4, "temperature": 2.0,
                         "alpha": 0.5, "weight_decay": 0.1, "opt": "muon"})
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.25,
                                 params={"scale": 1.5, "rank": 16, "opt": "muon"},
                                 distributions={"scale": optuna.distributions.FloatDistribution(0.5, 2.0),
                                                "rank": optuna.distributions.IntDistribution(8, 64),
                                                "opt": optuna.distributions.CategoricalDistribution(["adamw", "muon"])}))
    expected = {"meta": {"generator": "tools/check_optuna_journal.py write",
                         "optuna": optuna.__version__, "seed": 42},
                "study": "paper", "study_id": study._study_id,
                "direction": "minimize", "trials": dump_study(study)}
    with open(expected_path, "w") as f:
        json.dump(expected, f, indent=1)
    print(f"wrote {log_path} ({sum(1 for _ in open(log_path))} lines) and {expected_path}")


def same_number(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(b))


def check(log_path, study_name, ef_json):
    study = optuna.load_study(study_name=study_name, storage=storage(log_path))
    ours = json.load(open(ef_json))["trials"]
    theirs = dump_study(study)
    bad = 0
    if len(ours) != len(theirs):
        print(f"trial count: edgeforge {len(ours)}, optuna {len(theirs)}")
        bad += 1
    for a, b in zip(ours, theirs):
        for k in ("number", "state"):
            if a[k] != b[k]:
                print(f"trial {b['number']}: {k} edgeforge {a[k]} optuna {b[k]}")
                bad += 1
        if not same_number(a.get("value"), b["value"]):
            print(f"trial {b['number']}: value edgeforge {a.get('value')} optuna {b['value']}")
            bad += 1
        if set(a["params"]) != set(b["params"]):
            print(f"trial {b['number']}: params {sorted(a['params'])} vs {sorted(b['params'])}")
            bad += 1
        for k in b["params"]:
            if k in a["params"] and not same_number(a["params"][k], b["params"][k]):
                print(f"trial {b['number']}: param {k} edgeforge {a['params'][k]} optuna {b['params'][k]}")
                bad += 1
            if k in a.get("distributions", {}) and a["distributions"][k] != b["distributions"][k]:
                print(f"trial {b['number']}: distribution {k} differs")
                bad += 1
        ia, ib = a.get("intermediate", {}), b["intermediate"]
        if set(ia) != set(ib) or any(not same_number(ia[s], ib[s]) for s in ib):
            print(f"trial {b['number']}: intermediate values differ")
            bad += 1
    print(f"optuna {optuna.__version__} loaded '{study_name}' from {log_path}: "
          f"{len(theirs)} trials, states {sorted(set(t['state'] for t in theirs))}, "
          f"{bad} differences")
    if study.best_trial is not None and any(t["state"] == 1 for t in theirs):
        print(f"best value {study.best_value} params {study.best_params}")
    return 1 if bad else 0


def cont(log_path, study_name, n):
    study = optuna.load_study(study_name=study_name, storage=storage(log_path),
                              sampler=optuna.samplers.TPESampler(seed=1))
    dists = {}
    for t in study.get_trials(deepcopy=False):
        dists.update(t.distributions)
    for _ in range(n):
        t = study.ask(fixed_distributions=dists)
        v = sum(float(t.params[k]) if isinstance(t.params[k], (int, float)) else 0.0
                for k in sorted(t.params))
        study.tell(t, v)
    print(f"optuna continued '{study_name}': now {len(study.trials)} trials")
    return 0


def write_pruner(log_path, expected_path, seed=7):
    import numpy as np
    for p in (log_path, log_path + ".lock"):
        if os.path.exists(p):
            os.remove(p)
    st = storage(log_path)
    rs = np.random.RandomState(seed)
    pruner = optuna.pruners.MedianPruner()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    probes = []
    for name, direction, n_complete in (("min", "minimize", 9), ("max", "maximize", 8),
                                        ("few", "minimize", 3)):
        study = optuna.create_study(study_name=name, storage=st, direction=direction)
        for i in range(n_complete):
            base = rs.uniform(0, 2)
            steps = range(0, 8) if i % 3 else range(0, 8, 2)  # some trials skip odd steps
            iv = {s: float(base + 1.0 / (s + 1) + rs.normal() * 0.05) for s in steps}
            if i == 4:
                iv[3] = float("nan")
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=base, params={"x": 0.5},
                                         distributions=dist, intermediate_values=iv))
        for k in range(12):
            t = study.ask()
            last = int(rs.randint(0, 9))
            base = rs.uniform(0, 2.5)
            for s in range(last + 1):
                if k == 5 or (k == 7 and s == last):
                    v = float("nan")
                else:
                    v = float(base + 1.0 / (s + 1))
                if k % 4 == 3 and s % 2 == 1 and s != last:
                    continue  # gaps before the last step
                t.report(v, s)
            frozen = study._storage.get_trial(t._trial_id)
            probes.append({"study": name, "number": t.number,
                           "prune": bool(pruner.prune(study, frozen))})
    with open(expected_path, "w") as f:
        json.dump({"meta": {"generator": "tools/check_optuna_journal.py write-pruner",
                            "optuna": optuna.__version__, "seed": seed,
                            "pruner": "MedianPruner() defaults"}, "probes": probes}, f, indent=1)
    print(f"wrote {log_path} and {expected_path}: {len(probes)} probes, "
          f"{sum(p['prune'] for p in probes)} pruned")


def dashboard(url):
    import io
    from optuna_dashboard import wsgi
    app = wsgi(storage(url))

    def get(path):
        out = {}

        def start(status, headers, exc=None):
            out["status"] = status

        env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
               "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}
        body = b"".join(app(env, start))
        return out["status"], json.loads(body)

    status, studies = get("/api/studies")
    if not status.startswith("200"):
        print(f"dashboard: /api/studies -> {status}")
        return 1
    for s in studies["study_summaries"]:
        status, d = get(f"/api/studies/{s['study_id']}")
        if not status.startswith("200"):
            print(f"dashboard: study {s['study_name']} -> {status}")
            return 1
        states = sorted(set(t["state"] for t in d["trials"]))
        n_inter = sum(len(t["intermediate_values"]) for t in d["trials"])
        print(f"optuna-dashboard serves '{s['study_name']}': {len(d['trials'])} trials, "
              f"states {states}, {n_inter} intermediate values, "
              f"params {[p['name'] for p in d['trials'][0]['params']] if d['trials'] else []}")
    return 0


def worker(url, study_name, n):
    study = optuna.create_study(study_name=study_name, storage=storage(url), load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(n_startup_trials=5))

    def objective(t):
        x = t.suggest_float("x", 0.0, 1.0)
        y = t.suggest_int("y", 0, 5)
        return (x - 0.3) ** 2 + (y - 2) ** 2

    study.optimize(objective, n_trials=n)
    print(f"optuna worker ran {n} trials on '{study_name}'")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "dashboard":
        sys.exit(dashboard(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "write-pruner":
        write_pruner(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "worker":
        sys.exit(worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif len(sys.argv) >= 5 and sys.argv[1] == "continue":
        sys.exit(cont(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        print(__doc__)
        sys.exit(2)
