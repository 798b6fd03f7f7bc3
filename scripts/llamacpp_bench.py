#!/usr/bin/env python3
"""llama.cpp baseline for `deai bench engine`.

Input: one JSON argument {"model", "prompt": [ids], "gen": [ids], "threads", "reps"}.
Times a prefill over `prompt` and then decoding `gen` one token at a time (the same token
sequence deai decodes), best of `reps`. Prints one JSON line:
{"prefill_tps", "decode_tps", "version"}.
"""
import json
import sys
import time

import llama_cpp


def main() -> None:
    cfg = json.loads(sys.argv[1])
    prompt, gen, threads = cfg["prompt"], cfg["gen"], int(cfg["threads"])
    llm = llama_cpp.Llama(
        model_path=cfg["model"],
        n_ctx=len(prompt) + len(gen) + 8,
        n_batch=max(512, len(prompt)),
        n_ubatch=max(512, len(prompt)),
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    best_prefill = best_decode = 0.0
    for _ in range(int(cfg["reps"])):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        decode = time.perf_counter() - t
        best_prefill = max(best_prefill, len(prompt) / prefill)
        best_decode = max(best_decode, len(gen) / decode)
    print(json.dumps({"prefill_tps": best_prefill, "decode_tps": best_decode,
                      "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
