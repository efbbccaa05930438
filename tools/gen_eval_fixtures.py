#!/usr/bin/env python3
"""Reference fixtures for src/eval (tasks, scoring) and src/analyze (kurtosis).

Usage (from the repository root, offline, a few minutes):
    /work/pyref/bin/pip install "lm-eval==0.4.9.1"
    /work/pyref/bin/python tools/gen_eval_fixtures.py
    /work/pyref/bin/python tools/gen_eval_fixtures.py --full /tmp/all.json   # every document
    EF_TASKS_FULL=/tmp/all.json build/tests/test_tasks                      # compare them all

Writes tests/fixtures/eval/:
  tasks_render.json   per task >= 50 documents rendered by lm-evaluation-harness's OWN task
                      code: the (context, continuation) strings of every request, the choice
                      strings (doc_to_choice) and the gold index -> tests/test_tasks.c
  mc_scores.json      synthetic log-likelihoods fed through lm-eval's own process_results
                      (acc, acc_norm), aggregation (mean, mean_stderr) and group consolidation
                      (evaluator_utils.consolidate_group_results on the real mmlu group tree)
                      -> tests/test_mc.c
  encode_pairs.json   lm-eval's HFLM._encode_pair (context/continuation token ids) on 4
                      documents per task plus edge cases, with the committed SmolLM2 and
                      Llama 2 tokenizer.json files (tests/fixtures/tokenizers/),
                      add_bos_token=False -> tests/test_mc.c
  kurtosis.safetensors  data (normal, heavy-tailed, constant, tiny) and
                      scipy.stats.kurtosis for fisher in {True, False} x bias in {True, False}
                      -> tests/test_kurtosis.c

How lm-eval is run without network: lm-eval loads its datasets with
datasets.load_dataset(path=<dataset_path>, name=<dataset_name>). This script replaces that one
function with a loader that reads the committed original files under data/benchmarks/ and
converts each record to the row layout of the Hugging Face dataset the task YAML names
(reference.md §9.3 "Field mapping"):
  allenai/ai2_arc ARC-Easy   question=question.stem, choices={text,label}, answerKey
  tau/commonsense_qa         question=question.stem, question_concept, choices={label,text}
  Rowan/hellaswag            the original record (label as a string, as HF serves it)
  cais/mmlu <subject>        question, subject, choices=[A,B,C,D], answer=index of the letter
  (0.4.9.1 names openbookqa, social_i_qa and winogrande without the owner prefix)
  allenai/openbookqa main    question_stem=question.stem, choices={text,label}, answerKey
  baber/piqa                 goal, sol1, sol2, label=int(valid-labels.lst line)
  lighteval/siqa             context, question, answerA..C, label=dev-labels.lst line (str)
  allenai/winogrande xl      sentence, option1, option2, answer (str)
Everything else is lm-eval's code unchanged: TaskManager + get_task_dict build the tasks from
the YAMLs in the installed package (process_docs, doc_to_text, doc_to_choice, doc_to_target,
description, few-shot sampler), task.fewshot_context() renders the context and
task.construct_requests() the (context, continuation) pairs; task.process_results() scores.
Splits an evaluation never reads at 0-shot (train) are given the evaluation rows so that the
YAML's split names exist; MMLU's few-shot split "dev" is the real dev CSV.
"""
import collections
import csv
import glob
import json
import os
import random
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "benchmarks")
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")
SEED = 1234


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def mmlu_rows(split, subject):
    rows = []
    with open(os.path.join(DATA, "mmlu", split, f"{subject}_{split}.csv"), encoding="utf-8",
              newline="") as f:
        for r in csv.reader(f):
            rows.append({"question": r[0], "subject": subject, "choices": r[1:5],
                         "answer": "ABCD".index(r[5])})
    return rows


def hf_rows(path, name):
    """Local original files -> rows of the HF dataset lm-eval would download."""
    if path == "allenai/ai2_arc":
        return {"test": [{"id": d["id"], "question": d["question"]["stem"],
                          "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                                      "label": [c["label"] for c in d["question"]["choices"]]},
                          "answerKey": d["answerKey"]}
                         for d in jsonl(os.path.join(DATA, "arc_easy", "ARC-Easy-Test.jsonl"))]}
    if path == "tau/commonsense_qa":
        return {"validation": [
            {"id": d["id"], "question": d["question"]["stem"],
             "question_concept": d["question"]["question_concept"],
             "choices": {"label": [c["label"] for c in d["question"]["choices"]],
                         "text": [c["text"] for c in d["question"]["choices"]]},
             "answerKey": d["answerKey"]}
            for d in jsonl(os.path.join(DATA, "commonsense_qa", "dev_rand_split.jsonl"))]}
    if path == "Rowan/hellaswag":
        rows = jsonl(os.path.join(DATA, "hellaswag", "val_subset1000_original_rubrikscube.jsonl"))
        for r in rows:
            r["label"] = str(r["label"])
        return {"validation": rows}
    if path == "cais/mmlu":
        return {"test": mmlu_rows("test", name), "dev": mmlu_rows("dev", name),
                "validation": mmlu_rows("val", name)}
    if path in ("allenai/openbookqa", "openbookqa"):
        return {"test": [{"id": d["id"], "question_stem": d["question"]["stem"],
                          "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                                      "label": [c["label"] for c in d["question"]["choices"]]},
                          "answerKey": d["answerKey"]}
                         for d in jsonl(os.path.join(DATA, "openbookqa", "test.jsonl"))]}
    if path == "baber/piqa":
        docs = jsonl(os.path.join(DATA, "piqa", "valid.jsonl"))
        labels = lines(os.path.join(DATA, "piqa", "valid-labels.lst"))
        return {"validation": [dict(d, label=int(l)) for d, l in zip(docs, labels)]}
    if path in ("lighteval/siqa", "social_i_qa"):
        docs = jsonl(os.path.join(DATA, "social_iqa", "dev.jsonl"))
        labels = lines(os.path.join(DATA, "social_iqa", "dev-labels.lst"))
        return {"validation": [dict(d, label=l) for d, l in zip(docs, labels)]}
    if path in ("allenai/winogrande", "winogrande"):
        return {"validation": [{"sentence": d["sentence"], "option1": d["option1"],
                                "option2": d["option2"], "answer": d["answer"]}
                               for d in jsonl(os.path.join(DATA, "winogrande", "dev.jsonl"))]}
    raise KeyError(path)


def fake_load_dataset(path=None, name=None, **kwargs):
    import datasets
    splits = hf_rows(path, name)
    first = next(iter(splits.values()))
    for s in ("train", "validation", "test"):
        splits.setdefault(s, first)
    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})


def skip_vlm_backend():
    """lm_eval.models/__init__ imports every backend; its multimodal one (hf_vlms) names a
    transformers class that transformers 5 removed. A placeholder module in its place lets
    HFLM import; nothing multimodal is used."""
    import types
    sys.modules.setdefault("lm_eval.models.hf_vlms", types.ModuleType("lm_eval.models.hf_vlms"))


def install_loader():
    """Routes lm-eval's datasets.load_dataset to the committed files."""
    import datasets
    datasets.load_dataset = fake_load_dataset
    import lm_eval.api.task
    lm_eval.api.task.datasets.load_dataset = fake_load_dataset


def load_tasks(names):
    install_loader()
    from lm_eval.tasks import TaskManager, get_task_dict
    tm = TaskManager()
    return get_task_dict(names, tm)


def flatten(task_dict):
    """{task_name: Task} over a (possibly nested) task dict."""
    from lm_eval.api.task import Task
    out = {}
    for k, v in task_dict.items():
        if isinstance(v, Task):
            out[v.task_name] = v
        else:
            out.update(flatten(v))
    return out


def eval_docs(task):
    return list(task.test_docs() if task.has_test_docs() else task.validation_docs())


def gold_index(task, doc):
    """The gold index exactly as ConfigurableTask.process_results derives it."""
    choices = task.doc_to_choice(doc)
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -100
    return gold


def render(task, doc, num_fewshot):
    ctx = task.fewshot_context(doc, num_fewshot)
    insts = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.task_name, 0, 1))
    return {"requests": [list(i.arguments) for i in insts],
            "choices": task.doc_to_choice(doc), "gold": gold_index(task, doc)}


def pick(n, k, rng):
    """First k//2 documents plus k - k//2 random others, sorted."""
    first = list(range(min(n, k // 2)))
    rest = rng.sample(range(len(first), n), min(n - len(first), k - len(first)))
    return sorted(first + rest)


MMLU_SUBJECTS = ["abstract_algebra", "college_medicine", "high_school_us_history",
                 "moral_scenarios", "professional_law", "world_religions", "econometrics",
                 "formal_logic"]


def gen_tasks(rng):
    names = ["arc_easy", "commonsense_qa", "hellaswag", "openbookqa", "piqa", "social_iqa",
             "winogrande"] + [f"mmlu_{s}" for s in MMLU_SUBJECTS]
    tasks = flatten(load_tasks(names))
    out = {}
    for name in names:
        task = tasks[name]
        docs = eval_docs(task)
        items = []
        for i in pick(len(docs), 60 if not name.startswith("mmlu") else 10, rng):
            items.append(dict(render(task, docs[i], 0), index=i))
        if name.startswith("mmlu_"):
            out.setdefault("mmlu", []).extend(dict(it, subject=name[5:]) for it in items)
            # few-shot: the first K dev rows (sampler first_n) before the description's item
            for k in (1, 5):
                for i in (0, len(docs) - 1):
                    out.setdefault(f"mmlu_fewshot{k}", []).append(
                        dict(render(task, docs[i], k), index=i, subject=name[5:]))
        else:
            out[name] = items
    # HellaSwag: the shipped approximate file is already preprocessed (query/choices/gold);
    # render 60 of its rows with the same YAML but no process_docs.
    hs = tasks["hellaswag"]
    approx = jsonl(os.path.join(DATA, "hellaswag", "hellaswag_val_lmeval_approx.jsonl"))
    hs._config.process_docs = None
    items = []
    for i in pick(len(approx), 60, rng):
        doc = dict(approx[i], label=str(approx[i]["gold"]))
        items.append(dict(render(hs, doc, 0), index=i))
    out["hellaswag_approx"] = items
    return out


def gen_scores(rng):
    """Synthetic log-likelihoods through lm-eval's process_results and aggregations."""
    from lm_eval.api.metrics import mean, stderr_for_metric
    from lm_eval.evaluator_utils import consolidate_group_results
    nrng = np.random.default_rng(SEED)
    names = ["arc_easy", "hellaswag", "piqa", "social_iqa", "winogrande", "commonsense_qa",
             "openbookqa"]
    tasks = flatten(load_tasks(names))
    stderr_fn = stderr_for_metric(mean, bootstrap_iters=100000)
    out = {"tasks": {}}
    for name in names:
        task = tasks[name]
        if name == "hellaswag":  # the shipped (approximate) file, as edgeforge reads it
            task._config.process_docs = None
            docs = [dict(r, label=str(r["gold"])) for r in
                    jsonl(os.path.join(DATA, "hellaswag", "hellaswag_val_lmeval_approx.jsonl"))[:80]]
        else:
            docs = eval_docs(task)[:80]
        rows, per_metric = [], {}
        for di, doc in enumerate(docs):
            nc = len(task.doc_to_choice(doc))
            lls = (nrng.standard_normal(nc) * 4 - 10).round(nrng.integers(0, 4)).tolist()
            if di % 7 == 0:  # exact ties: numpy argmax takes the first maximum
                lls[-1] = max(lls)
            if di % 11 == 0:
                lls = [lls[0]] * nc
            greedy = [bool(b) for b in nrng.integers(0, 2, nc)]
            res = task.process_results(doc, list(zip(lls, greedy)))
            rows.append({"index": di, "lls": lls, "is_greedy": greedy,
                         **{k: float(v) for k, v in res.items()}})
            for k, v in res.items():
                per_metric.setdefault(k, []).append(v)
        agg = {}
        for k, v in per_metric.items():
            agg[k] = mean(v)
            agg[k + "_stderr"] = stderr_fn(v)
        out["tasks"][name] = {"docs": rows, "agg": agg}
    # MMLU group aggregation: synthetic 0/1 accuracies for every real test question, through
    # consolidate_group_results on the real mmlu group tree (4 groups, 57 subjects).
    td = load_tasks(["mmlu"])
    leaf = flatten(td)
    results, versions = {}, {}
    subj = {}
    for tname in sorted(leaf):
        n = len(eval_docs(leaf[tname]))
        p = nrng.uniform(0.2, 0.8)
        accs = (nrng.uniform(size=n) < p).astype(int).tolist()
        if tname == "mmlu_anatomy":
            accs = accs[:1]  # one document: lm-eval reports stderr "N/A"
        results[tname] = {"acc,none": mean(accs),
                          "acc_stderr,none": stderr_fn(accs) if len(accs) > 1 else "N/A",
                          "samples": len(accs), "alias": tname}
        subj[tname[5:]] = {"acc": "".join(map(str, accs))}
    full = {k: dict(v) for k, v in results.items()}
    # the same without the one-document subject (all stderrs defined)
    res2 = {k: dict(v) for k, v in results.items()}
    n_anat = len(eval_docs(leaf["mmlu_anatomy"]))
    a2 = [1] * (n_anat // 2) + [0] * (n_anat - n_anat // 2)
    res2["mmlu_anatomy"] = {"acc,none": mean(a2), "acc_stderr,none": stderr_fn(a2),
                            "samples": n_anat, "alias": "mmlu_anatomy"}
    groups = {}
    for tag, res in (("with_na", full), ("all_defined", res2)):
        r, _, _, _ = consolidate_group_results(collections.defaultdict(dict, res), versions, td)
        groups[tag] = {g: {"acc": r[g]["acc,none"], "acc_stderr": r[g]["acc_stderr,none"],
                           "samples": r[g]["samples"]}
                       for g in ("mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences",
                                 "mmlu_other")}
    out["mmlu"] = {"subjects": subj, "anatomy_all_defined": "".join(map(str, a2)),
                   "groups": groups}
    return out


def gen_encode_pairs(tasks):
    """lm-eval's own HFLM._encode_pair on real requests, with the committed tokenizers."""
    import transformers
    skip_vlm_backend()
    from lm_eval.models.huggingface import HFLM
    reqs = []
    for name, items in tasks.items():
        if name.startswith("mmlu_fewshot"):
            continue  # long contexts; the rule is the same
        for it in items[:4]:
            reqs.extend(tuple(r) for r in it["requests"])
    reqs += [("Answer: ", "A"), ("Question: x\nAnswer:\n\n", " yes"), ("ends in tab\t", "x"),
             ("no space", "s"), ("nbsp\u00a0", "\u00e9t\u00e9"), ("   ", " all space"),
             ("The cat sat on the", " mat."), ("digits 12", "34"), ("", " empty context")]
    out = {}
    for tname, path in (("smollm2", "tests/fixtures/tokenizers/smollm2"),
                        ("llama2", "tests/fixtures/tokenizers/llama2")):
        tok = transformers.AutoTokenizer.from_pretrained(os.path.join(ROOT, path))
        cases = []
        # add_bos_token=False only (lm-eval's default): with True, lm-eval passes
        # add_special_tokens=True, which adds nothing for these two tokenizer.json files
        # (no BOS post-processor), so the flag cannot be checked against them.
        lm = HFLM.__new__(HFLM)  # no model: only the tokenizer paths are exercised
        lm.tokenizer = tok
        lm.backend = "causal"
        lm.add_bos_token = False
        lm.custom_prefix_token_id = None
        lm.AUTO_MODEL_CLASS = transformers.AutoModelForCausalLM
        for ctx, cont in reqs:
            if ctx == "":  # TemplateLM.loglikelihood's empty-context branch
                if lm.prefix_token_id is None:
                    continue
                c, k = [lm.prefix_token_id], lm.tok_encode(cont)
            else:
                c, k = lm._encode_pair(ctx, cont)
            cases.append({"context": ctx, "continuation": cont, "ctx": c, "cont": k})
        out[tname] = {"tokenizer": path, "transformers": transformers.__version__,
                      "cases": cases}
    with open(os.path.join(OUT, "encode_pairs.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)


def gen_kurtosis():
    from safetensors.numpy import save_file
    import scipy
    from scipy.stats import kurtosis
    rng = np.random.default_rng(SEED)
    cases = {
        "normal": rng.standard_normal(10000),
        "student_t3": rng.standard_t(3, 20000),              # heavy tails
        "cauchy": rng.standard_cauchy(5000),                 # very heavy tails
        "outliers": np.concatenate([rng.standard_normal(4000) * 0.02,
                                    np.array([8.0, -6.5, 11.0])]),  # LLM-like spikes
        "uniform_shifted": rng.uniform(1000.0, 1001.0, 3000),     # large mean
        "tiny4": np.array([1.0, 2.0, 4.0, 8.0]),
        "tiny3": np.array([1.0, 2.0, 7.0]),                  # n <= 3: bias=False keeps biased
        "constant": np.full(100, 0.25),                      # m2 = 0 -> NaN
    }
    tensors = {}
    for name, x in cases.items():
        x32 = x.astype(np.float32)
        xd = x32.astype(np.float64)  # the float32 values, in double (what C reads)
        ref = [kurtosis(xd, fisher=f, bias=b) for f in (True, False) for b in (True, False)]
        tensors["x_" + name] = x32
        tensors["k_" + name] = np.array(ref, dtype=np.float64)
    # activation channels: X (n_tokens, K) with a few outlier channels, per-channel statistics
    X = (rng.standard_normal((96, 48)) * rng.uniform(0.5, 1.5, 48)).astype(np.float32)
    X[:, 5] *= 40
    X[:, 17] += 9
    X[3, 30] = 250
    Xd = X.astype(np.float64)
    stats = {"absmax": np.abs(Xd).max(axis=0), "rms": np.sqrt((Xd ** 2).mean(axis=0)),
             "all": Xd.reshape(-1)}
    tensors["act_X"] = X
    for s, v in stats.items():
        tensors["act_k_" + s] = np.array([kurtosis(v, fisher=f, bias=b) for f in (True, False)
                                          for b in (True, False)], dtype=np.float64)
    # parameter-count weighted mean over layers (paper Table 7): plain numpy
    vals = np.array([4.1, 3.2, np.nan, 7.5])
    w = np.array([4096, 1024, 2048, 512])
    ok = np.isfinite(vals)
    tensors["wmean_values"] = vals
    tensors["wmean_weights"] = w.astype(np.int64)
    tensors["wmean_ref"] = np.array([np.average(vals[ok], weights=w[ok])])
    path = os.path.join(OUT, "kurtosis.safetensors")
    save_file(tensors, path,
              metadata={"scipy": scipy.__version__, "numpy": np.__version__, "seed": str(SEED),
                        "order": "fisher/bias: TT, TF, FT, FF"})
    os.chmod(path, 0o644)


def dump_full(path):
    """Every document of every task rendered by lm-eval (not committed; tens of MB).
    tests/test_tasks.c compares all of them when EF_TASKS_FULL=<path> is set."""
    names = ["arc_easy", "commonsense_qa", "hellaswag", "openbookqa", "piqa", "social_iqa",
             "winogrande", "mmlu"]
    td = flatten(load_tasks(names))
    out = {}
    for name, task in td.items():
        key = "mmlu" if name.startswith("mmlu_") else name
        items = []
        for i, doc in enumerate(eval_docs(task)):
            it = dict(render(task, doc, 0), index=i)
            if key == "mmlu":
                it["subject"] = name[5:]
            items.append(it)
        out.setdefault(key, []).extend(items)
    hs = td["hellaswag"]
    hs._config.process_docs = None
    approx = jsonl(os.path.join(DATA, "hellaswag", "hellaswag_val_lmeval_approx.jsonl"))
    out["hellaswag_approx"] = [dict(render(hs, dict(r, label=str(r["gold"])), 0), index=i)
                               for i, r in enumerate(approx)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"tasks": out}, f, ensure_ascii=False)
    print({k: len(v) for k, v in out.items()})


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        dump_full(sys.argv[2])
        return
    import lm_eval
    import datasets
    os.makedirs(OUT, exist_ok=True)
    meta = {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
            "datasets": datasets.__version__, "numpy": np.__version__, "seed": SEED,
            "python": sys.version.split()[0], "script": "tools/gen_eval_fixtures.py"}
    try:
        from importlib.metadata import version
        meta["lm_eval"] = version("lm_eval")
    except Exception:
        pass
    gen_kurtosis()
    rng = random.Random(SEED)
    tasks = gen_tasks(rng)
    with open(os.path.join(OUT, "tasks_render.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "tasks": tasks}, f, ensure_ascii=False, indent=0)
    gen_encode_pairs(tasks)
    scores = gen_scores(rng)
    with open(os.path.join(OUT, "mc_scores.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, **scores}, f, indent=0)
    print({k: len(v) for k, v in tasks.items()})


if __name__ == "__main__":
    main()
