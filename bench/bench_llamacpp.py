#!/usr/bin/env python3
"""llama.cpp side of bench/bench_infer.sh, through llama-cpp-python (built from PyPI, which
compiles llama.cpp from source): prompt processing of N fixed pseudo-random tokens in one
batch, then M decode steps of one token each (no sampling, as llama-bench's tg test), at the
same context depth as edgeforge's run. Prints one line: "pp <tok/s> tg <tok/s>" (best of R).

Usage: python bench/bench_llamacpp.py MODEL.gguf THREADS [N=512] [M=128] [R=3]
"""
import random
import sys
import time

import llama_cpp
from llama_cpp import Llama


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    path, threads = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    m = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    llm = Llama(model_path=path, n_ctx=n + m + 16, n_batch=n, n_ubatch=n, n_threads=threads,
                n_threads_batch=threads, verbose=False, logits_all=False)
    V = llm.n_vocab()
    rng = random.Random(1234)
    prompt = [rng.randrange(V) for _ in range(n)]
    gen = [rng.randrange(V) for _ in range(m)]
    best_pp = best_tg = 0.0
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        t2 = time.perf_counter()
        best_pp = max(best_pp, n / (t1 - t0))
        best_tg = max(best_tg, m / (t2 - t1))
    print(f"pp {best_pp:.2f} tg {best_tg:.2f} llama_cpp_python {llama_cpp.__version__}")


if __name__ == "__main__":
    main()
