#!/usr/bin/env python3
"""Model-loading benchmark: edgeforge (bench/bench_load.c) next to llama.cpp (llama-cpp-python)
and transformers, on the same files, in one run. Prints a markdown table and writes JSON.

Usage (from the repository root; normally through bench/bench_load.sh):
  /work/pyref/bin/python bench/bench_load.py --edgeforge build-iobench/bench_load \
      --gguf models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --gguf bench/out/smollm2-f16.gguf \
      --hf bench/out/smollm2-hf-bf16 --hf bench/out/smollm2-hf-f32 \
      [--reps 7] [--reps-hf 5] [--out bench/out/bench_load.json]

What is timed (wall clock, median over reps, each after one untimed warm-up load so every
tool reads from the page cache):
  edgeforge   model_load(path) incl. tokenizer (bench_load.c); "no tok" = weights only;
              "+touch" = the load plus reading every weight byte once
  llama.cpp   llama_cpp.Llama(model_path, n_ctx=512, vocab_only=False, use_mmap=M,
              verbose=False): model + vocab + context (KV cache for 512 tokens); and the
              model alone via the low-level llama_model_load_from_file when available
  llama.cpp C  the same through llama.cpp's C API (bench/bench_load_llamacpp.c, --llamacpp-exe):
              llama_model_load_from_file (model + vocab), and that plus
              llama_init_from_model(n_ctx=512); load_mode MMAP or NONE
  transformers AutoModelForCausalLM.from_pretrained(dir, dtype=<file dtype>) (CPU; model
              weights only, no tokenizer), after `import transformers, torch` (not timed)
Ratios are other/edgeforge (> 1: edgeforge faster).
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def median_time(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        obj = fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        del obj
    return {"median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "reps": reps}


def run_edgeforge(exe, path, reps, *flags):
    out = subprocess.run([exe, "--reps", str(reps), *flags, path], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    res = {"median_ms": r["load_ms_median"], "min_ms": r["load_ms_min"],
           "max_ms": r["load_ms_max"], "reps": reps}
    if "touch_ms_median" in r:
        res["touch_ms_median"] = r["touch_ms_median"]
    return res


def llama_cpp_loaders(path):
    import llama_cpp
    loaders = {}
    for mmap in (True, False):
        def full(mmap=mmap):
            return llama_cpp.Llama(model_path=path, n_ctx=512, vocab_only=False, use_mmap=mmap,
                                   verbose=False)
        loaders["llama.cpp Llama() mmap=%s" % ("on" if mmap else "off")] = full
    load = getattr(llama_cpp, "llama_model_load_from_file", None) or \
        getattr(llama_cpp, "llama_load_model_from_file", None)
    free = getattr(llama_cpp, "llama_model_free", None) or getattr(llama_cpp, "llama_free_model", None)
    if load and free:
        for mmap in (True, False):
            def model_only(mmap=mmap):
                p = llama_cpp.llama_model_default_params()
                if hasattr(p, "load_mode"):  # newer llama.cpp: enum llama_load_mode
                    p.load_mode = 1 if mmap else 0
                else:
                    p.use_mmap = mmap
                m = load(path.encode(), p)
                if not m:
                    raise RuntimeError("llama.cpp could not load " + path)
                free(m)
            loaders["llama.cpp model only mmap=%s" % ("on" if mmap else "off")] = model_only
    return loaders, getattr(llama_cpp, "__version__", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgeforge", required=True)
    ap.add_argument("--llamacpp-exe", help="bench_load_llamacpp (C API) for llama.cpp numbers "
                    "next to (or, without llama-cpp-python, instead of) the Python ones")
    ap.add_argument("--gguf", action="append", default=[])
    ap.add_argument("--hf", action="append", default=[])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--reps-hf", type=int, default=5)
    ap.add_argument("--out", default="bench/out/bench_load.json")
    a = ap.parse_args()

    results = []  # (file, tool, stats)
    versions = {"python": platform.python_version()}

    def add(file, tool, stats):
        results.append({"file": file, "tool": tool, **stats})
        print("  %-34s %-34s %9.1f ms (min %.1f, max %.1f)" % (
            os.path.basename(file.rstrip("/")), tool, stats["median_ms"], stats["min_ms"],
            stats["max_ms"]), file=sys.stderr, flush=True)

    for path in a.gguf:
        add(path, "edgeforge", run_edgeforge(a.edgeforge, path, a.reps))
        add(path, "edgeforge no tok", run_edgeforge(a.edgeforge, path, a.reps, "--no-tokenizer"))
        t = run_edgeforge(a.edgeforge, path, a.reps, "--touch")
        add(path, "edgeforge +touch", {**t, "median_ms": t["median_ms"] + t["touch_ms_median"],
                                       "min_ms": float("nan"), "max_ms": float("nan")})
        try:
            loaders, versions["llama_cpp_python"] = llama_cpp_loaders(path)
        except ImportError as e:
            print("llama-cpp-python missing: %s" % e, file=sys.stderr)
            loaders = {}
        for name, fn in loaders.items():
            add(path, name, median_time(fn, a.reps))
        if a.llamacpp_exe:
            for mmap in (1, 0):
                out = subprocess.run([a.llamacpp_exe, "--reps", str(a.reps), "--mmap", str(mmap),
                                      path], check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                on = "on" if mmap else "off"
                add(path, "llama.cpp C model only mmap=" + on, {
                    "median_ms": r["model_ms_median"], "min_ms": r["model_ms_min"],
                    "max_ms": r["model_ms_max"], "reps": a.reps})
                add(path, "llama.cpp C model+ctx512 mmap=" + on, {
                    "median_ms": r["ctx_ms_median"], "min_ms": r["ctx_ms_min"],
                    "max_ms": r["ctx_ms_max"], "reps": a.reps})

    if a.hf:
        t0 = time.perf_counter()
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
        try:
            transformers.utils.logging.disable_progress_bar()
        except AttributeError:
            pass
        versions["transformers"] = transformers.__version__
        versions["torch"] = torch.__version__
        versions["torch_threads"] = torch.get_num_threads()
        print("  (import torch+transformers: %.1f s, not timed)" % (time.perf_counter() - t0),
              file=sys.stderr)
    for path in a.hf:
        add(path, "edgeforge", run_edgeforge(a.edgeforge, path, a.reps))
        add(path, "edgeforge no tok", run_edgeforge(a.edgeforge, path, a.reps, "--no-tokenizer"))
        t = run_edgeforge(a.edgeforge, path, a.reps, "--touch")
        add(path, "edgeforge +touch", {**t, "median_ms": t["median_ms"] + t["touch_ms_median"],
                                       "min_ms": float("nan"), "max_ms": float("nan")})
        with open(os.path.join(path, "config.json")) as f:
            dt = json.load(f).get("torch_dtype", "float32")
        dtype = getattr(torch, dt)
        add(path, "transformers from_pretrained",
            median_time(lambda: AutoModelForCausalLM.from_pretrained(path, dtype=dtype), a.reps_hf))

    # table: per file, each tool with its ratio to edgeforge (tokenizer loaded) and, for
    # tools that load no tokenizer, to "edgeforge no tok"
    lines = ["| file | tool | median ms | min-max ms | ratio to edgeforge |", "|---|---|---|---|---|"]
    for r in results:
        # transformers loads no tokenizer; llama.cpp's model load includes its vocab
        base_tool = "edgeforge no tok" if r["tool"].startswith("transformers") else "edgeforge"
        base = next(x for x in results if x["file"] == r["file"] and x["tool"] == base_tool)
        ratio = "" if r["tool"].startswith("edgeforge") else "%.2fx (vs %s)" % (
            r["median_ms"] / base["median_ms"], base_tool)
        spread = "-" if r["min_ms"] != r["min_ms"] else "%.1f-%.1f" % (r["min_ms"], r["max_ms"])
        lines.append("| %s | %s | %.1f | %s | %s |" % (
            r["file"], r["tool"], r["median_ms"], spread, ratio))
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"versions": versions, "results": results, "date": time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, f, indent=1)
    print("\nversions: %s" % json.dumps(versions))


if __name__ == "__main__":
    main()
