#!/usr/bin/env python3
"""Score parity of `edgeforge eval` with lm-evaluation-harness's Hugging Face backend.

Runs lm-eval 0.4.9.1 (HFLM, transformers loading the same GGUF file, float32, CPU) on the
first N documents of each task through lm_eval.simple_evaluate(log_samples=True), and
compares every document's per-choice log-likelihoods, is_greedy, acc and acc_norm with the
JSON lines `edgeforge eval --log-samples` wrote for the same documents.

Usage (from the repository root):
    D=$(tools/check_eval_parity.py --make-data-dir /tmp/ef_parity_data)
    build/edgeforge eval MODEL.gguf --tasks T1,T2 --limit N --data-dir "$D" \
        --log-samples /tmp/ours.jsonl
    /work/pyref/bin/python tools/check_eval_parity.py MODEL.gguf --tasks T1,T2 --limit N \
        --samples /tmp/ours.jsonl [--report out.json]

--make-data-dir builds a data folder of links to data/benchmarks whose HellaSwag is the
1000-record ORIGINAL subset (the documents lm-eval sees through the offline loader of
tools/gen_eval_fixtures.py), so HellaSwag is compared exactly too.
--ref-out FILE keeps lm-eval's samples (the slow half, run once, e.g. in the background);
--ref-in FILE compares a later edgeforge run against them without running lm-eval again.
Exit status 1 when a log-likelihood differs by more than --tol + --rtol * |LL| (defaults
1e-3 and 2e-5; the report also counts the requests over --tol alone) or an acc / acc_norm
differs where the two best choices are further apart than --tol.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_eval_fixtures as G  # noqa: E402  (offline dataset loader)


def make_data_dir(path):
    os.makedirs(path, exist_ok=True)
    for t in os.listdir(G.DATA):
        src = os.path.join(G.DATA, t)
        if not os.path.isdir(src):
            continue
        dst = os.path.join(path, t)
        if t == "hellaswag":
            os.makedirs(dst, exist_ok=True)
            link = os.path.join(dst, "hellaswag_val.jsonl")
            if not os.path.exists(link):
                os.symlink(os.path.join(src, "val_subset1000_original_rubrikscube.jsonl"), link)
        elif not os.path.exists(dst):
            os.symlink(src, dst)
    print(path)


def gguf_pre(path):
    """tokenizer.ggml.pre of a GGUF file ("" when absent)."""
    import gguf
    r = gguf.GGUFReader(path)
    f = r.fields.get("tokenizer.ggml.pre")
    return bytes(f.parts[f.data[0]]).decode() if f else ""


def gguf_tokenizer(path):
    """transformers' tokenizer of a GGUF file, with the pre-tokenizer the model was trained
    with where the conversion loses it."""
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    if gguf_pre(path) == "smollm":
        # transformers' GGUF tokenizer conversion drops SmolLM2's Digits pre-tokenizer (the
        # model's own tokenizer.json: Sequence[Digits(individual_digits), ByteLevel]; what
        # llama.cpp's pre "smollm" means). Without it "at  428" becomes 'Ġ' 'Ġ428' instead
        # of 'ĠĠ' '4' '2' '8', and lm-eval would score other token ids than the model's.
        from tokenizers import pre_tokenizers as pt
        tok.backend_tokenizer.pre_tokenizer = pt.Sequence([
            pt.Digits(individual_digits=True),
            pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    return tok


def hflm(path, batch):
    """lm-eval's HFLM on a GGUF file: transformers loads it in float32 on the CPU, with the
    model's own tokenizer (gguf_tokenizer) and the offline dataset loader installed."""
    import transformers
    G.skip_vlm_backend()
    import lm_eval.models.huggingface as hf_module
    from lm_eval.models.huggingface import HFLM

    class TransformersProxy:
        """HFLM._model_call names transformers.AutoModelForVision2Seq, which transformers 5
        removed; huggingface.py's own `transformers` global gets this stand-in."""

        def __getattr__(self, name):
            if name == "AutoModelForVision2Seq":
                return transformers.AutoModelForImageTextToText
            return getattr(transformers, name)

    hf_module.transformers = TransformersProxy()
    G.install_loader()
    return HFLM(pretrained=os.path.dirname(os.path.abspath(path)),
                gguf_file=os.path.basename(path), tokenizer=gguf_tokenizer(path),
                dtype="float32", device="cpu", batch_size=batch)


def run_lm_eval(a):
    """lm-eval's samples keyed by (task, subject, doc_id), plus versions and results."""
    import torch
    import transformers
    lm = hflm(a.model, a.batch)
    import lm_eval
    from lm_eval.tasks import TaskManager
    res = lm_eval.simple_evaluate(model=lm, tasks=a.tasks.split(","), limit=a.limit,
                                  log_samples=True, task_manager=TaskManager(),
                                  bootstrap_iters=0)
    ref = {}
    for tname, samples in res["samples"].items():
        task = "mmlu" if tname.startswith("mmlu_") else tname
        subject = tname[5:] if task == "mmlu" else ""
        for s in samples:
            ref[(task, subject, s["doc_id"])] = s
    versions = {"lm_eval": getattr(lm_eval, "__version__", "0.4.9.1"),
                "torch": torch.__version__, "transformers": transformers.__version__}
    if a.ref_out:
        keep = [{"task": k[0], "subject": k[1], "doc_id": k[2],
                 "filtered_resps": v["filtered_resps"],
                 **{m: v[m] for m in ("acc", "acc_norm") if m in v}} for k, v in ref.items()]
        with open(a.ref_out, "w") as f:
            json.dump({"versions": versions, "results": res["results"], "samples": keep}, f)
    return versions, res["results"], ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--tasks", default="arc_easy")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--samples")
    ap.add_argument("--report")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=2e-5,
                    help="a log-likelihood may differ by tol + rtol * |LL|: float32 engines "
                    "differ by ~1e-5 nats per token, which adds up over 100-token continuations")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--make-data-dir")
    ap.add_argument("--ref-out", help="also write lm-eval's samples and results (JSON) here")
    ap.add_argument("--ref-in", help="compare against a --ref-out file instead of running "
                    "lm-eval again")
    a = ap.parse_args()
    if a.make_data_dir:
        make_data_dir(a.make_data_dir)
        return 0
    if a.ref_in:
        with open(a.ref_in) as f:
            saved = json.load(f)
        versions, results, ref = saved["versions"], saved["results"], {}
        for s in saved["samples"]:
            ref[(s["task"], s["subject"], s["doc_id"])] = s
    else:
        versions, results, ref = run_lm_eval(a)
    if not a.samples:  # reference only (--ref-out)
        return 0
    import time
    while not os.path.exists(a.samples):  # edgeforge may still be running beside us
        time.sleep(10)
    ours = [json.loads(l) for l in open(a.samples)]
    worst, n_req, n_docs, diff_acc, near_ties, n_bad = 0.0, 0, 0, [], 0, 0
    per_task = {}
    for o in ours:
        key = (o["task"], o["subject"], o["doc_id"])
        if key not in ref:
            continue
        s = ref[key]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        greedy = [bool(r[1]) for r in s["filtered_resps"]]
        diffs = [abs(x - y) for x, y in zip(lls, o["lls"])]
        d = max(diffs)
        worst = max(worst, d)
        over = sum(e > a.tol for e in diffs)
        bad = sum(e > a.tol + a.rtol * abs(x) for e, x in zip(diffs, lls))
        rel = max(e / max(1.0, abs(x)) for e, x in zip(diffs, lls))
        n_req += len(lls)
        n_docs += 1
        t = per_task.setdefault(o["task"], {"docs": 0, "requests": 0, "max_abs_ll_diff": 0.0,
                                            "max_rel_ll_diff": 0.0, "requests_over_tol": 0,
                                            "requests_out_of_bounds": 0, "acc_diff": 0,
                                            "acc_norm_diff": 0, "greedy_diff": 0})
        t["docs"] += 1
        t["requests"] += len(lls)
        t["max_abs_ll_diff"] = max(t["max_abs_ll_diff"], d)
        t["max_rel_ll_diff"] = max(t["max_rel_ll_diff"], rel)
        t["requests_over_tol"] += over
        t["requests_out_of_bounds"] += bad
        n_bad += bad
        t["greedy_diff"] += sum(g != h for g, h in zip(greedy, o["is_greedy"]))
        srt = sorted(lls, reverse=True)
        tie = len(srt) > 1 and srt[0] - srt[1] <= a.tol
        for m in ("acc", "acc_norm"):
            if m in s and float(s[m]) != float(o[m]):
                t[m + "_diff"] += 1
                if tie:
                    near_ties += 1
                else:
                    diff_acc.append((key, m))
    report = {**versions, "model": a.model, "limit": a.limit, "documents": n_docs, "requests": n_req,
              "max_abs_ll_diff": worst, "tol": a.tol, "rtol": a.rtol,
              "requests_out_of_bounds": n_bad, "acc_diffs_outside_near_ties": len(diff_acc),
              "acc_diffs_at_near_ties": near_ties, "tasks": per_task,
              "lm_eval_results": results}
    print(json.dumps({k: v for k, v in report.items() if k != "lm_eval_results"}, indent=1))
    if a.report:
        with open(a.report, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if n_docs > 0 and n_bad == 0 and not diff_acc else 1


if __name__ == "__main__":
    sys.exit(main())
