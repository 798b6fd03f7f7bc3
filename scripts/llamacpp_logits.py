#!/usr/bin/env python3
"""llama.cpp logits for `deai calibrate` (the cross-profile sampling tolerance).

Input: one JSON argument {"model", "threads", "top", "seqs": [{"tokens": [ids], "from": i, "n": n}]}.
For each sequence, one prefill (fresh KV cache) over `tokens` with every position marked as an
output, and for rows `from .. from+n` llama.cpp's `top` largest logits. Prints one JSON line:
{"version", "n_vocab", "rows": [[[[id, logit], ...] per row] per sequence]}, each row sorted by
logit descending (ties by id).
"""
import json
import sys

import llama_cpp
import numpy as np


def main() -> None:
    cfg = json.loads(sys.argv[1])
    seqs = cfg["seqs"]
    threads = int(cfg.get("threads", 2))
    top = int(cfg.get("top", 32))
    n_ctx = max(len(s["tokens"]) for s in seqs) + 8
    llm = llama_cpp.Llama(
        model_path=cfg["model"],
        logits_all=True,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    n_vocab = llm.n_vocab()
    out = []
    for s in seqs:
        toks, start, n = s["tokens"], int(s["from"]), int(s["n"])
        if start < 0 or start + n > len(toks):
            raise SystemExit(f"rows {start}..{start + n} outside {len(toks)} tokens")
        llm._batch.reset()
        llm._ctx.kv_cache_clear()
        llm._batch.add_sequence(toks, 0, True)
        llm._ctx.decode(llm._batch)
        ptr = llama_cpp.llama_get_logits(llm._ctx.ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(len(toks) * n_vocab,))
        logits = logits.reshape(len(toks), n_vocab)[start:start + n]
        rows = []
        for row in logits:
            idx = np.lexsort((np.arange(n_vocab), -row))[:top]
            rows.append([[int(i), float(row[i])] for i in idx])
        out.append(rows)
    llm._batch.reset()
    print(json.dumps({"version": llama_cpp.__version__, "n_vocab": n_vocab, "rows": out}))


if __name__ == "__main__":
    main()
