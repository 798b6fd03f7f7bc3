#!/usr/bin/env python3
"""llama.cpp hidden states for `deai calibrate`.

Input: one JSON argument {"model", "threads", "seqs": [{"tokens": [ids], "from": i, "n": n}]}.
For each sequence, one prefill (fresh KV cache) over `tokens` with every position marked as an
output, and the final hidden states (after the last RMSNorm: llama.cpp's `t_embd`, the
LM-head input, which an embedding context with pooling NONE returns per token) of rows
`from .. from+n`. Prints one JSON line:
{"version", "n_embd", "rows": [hex of n x n_embd little-endian f32, one per sequence]}.
"""
import json
import sys

import llama_cpp
import numpy as np


def main() -> None:
    cfg = json.loads(sys.argv[1])
    seqs = cfg["seqs"]
    threads = int(cfg.get("threads", 2))
    n_ctx = max(len(s["tokens"]) for s in seqs) + 8
    llm = llama_cpp.Llama(
        model_path=cfg["model"],
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    n_embd = llm.n_embd()
    rows = []
    for s in seqs:
        toks, start, n = s["tokens"], int(s["from"]), int(s["n"])
        if start < 0 or start + n > len(toks):
            raise SystemExit(f"rows {start}..{start + n} outside {len(toks)} tokens")
        llm._batch.reset()
        llm._ctx.kv_cache_clear()
        llm._batch.add_sequence(toks, 0, True)
        llm._ctx.decode(llm._batch)
        ptr = llama_cpp.llama_get_embeddings(llm._ctx.ctx)
        h = np.ctypeslib.as_array(ptr, shape=(len(toks) * n_embd,))
        h = h.reshape(len(toks), n_embd)[start:start + n]
        rows.append(np.ascontiguousarray(h, dtype="<f4").tobytes().hex())
    llm._batch.reset()
    print(json.dumps({"version": llama_cpp.__version__, "n_embd": n_embd, "rows": rows}))


if __name__ == "__main__":
    main()
