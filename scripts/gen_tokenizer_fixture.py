#!/usr/bin/env python3
"""Generate crates/engine/tests/fixtures/tokenizer_llamacpp.json: reference token ids from
llama.cpp (through llama-cpp-python) for the deai-engine tokenizer tests.

Usage (from the repository root):

    python3 -m venv .venv && .venv/bin/pip install llama-cpp-python
    .venv/bin/python scripts/gen_tokenizer_fixture.py [MODEL.gguf]

MODEL defaults to $DEAI_MODEL_PATH. Only the vocabulary is loaded (vocab_only=True), and every
case is tokenized exactly as `llama_tokenize(text, add_special=False, parse_special=True)`.
Chat cases also record the prompt rendered by the GGUF's own `tokenizer.chat_template`
(jinja2, as llama-cpp-python renders it), which the Rust tests compare with `chat_prompt`.
The output is deterministic for a given model and llama-cpp-python version.
"""

import hashlib
import json
import os
import random
import sys

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "engine",
    "tests",
    "fixtures",
    "tokenizer_llamacpp.json",
)

LONG_PARAGRAPH = (
    "Verifiable inference means that anyone can re-run a model on the same input and obtain "
    "bit-identical outputs. That requires deterministic kernels: the order of floating-point "
    "additions must not depend on the number of threads, the batch size, or whether a prefix "
    "was cached. In 2024, most inference engines did not guarantee this; results drifted by a "
    "few ULPs between runs, which is harmless for chat but fatal for proofs. We fix the "
    "reduction order, quantize activations per 32-element block exactly like llama.cpp, and "
    "hash the hidden states. The receipt then names the kernel profile (e.g. \"cpu-v1\"), the "
    "model's SHA-256, and the token ids — nothing else is needed to check it!\n\n"
    "Q: Does it work with other models?\nA: Yes, if they're llama-family GGUF files.\n"
)

CASES = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces    between     words",
    "12345",
    "3.14159",
    "year 2026",
    "Call 555-0199 or +1 (800) 123-4567 before 10:30am.",
    "1,000,000 and 1e-9 and 0x1F",
    "café naïve résumé",
    "Größe straße Ærøskøbing",
    "こんにちは世界",
    "中文分词测试，标点。",
    "안녕하세요",
    "Привет, мир! Ελληνικά",
    "مرحبا بالعالم",
    "👍🏽 🎉",
    "family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵",
    "line one\nline two\n\nline four",
    "tabs\tand\t\ttabs",
    "\n\n\n",
    "   \n  \t \r\n end",
    "ends with newline\n",
    "I'm, you'll, they'd, we've, she's, it't, they're",
    "I'M LOUD, YOU'LL SEE",
    "don't 'quote' ''double''",
    'def f(x):\n    return x ** 2  # square\n',
    'fn main() {\n    println!("{}", 1 + 2);\n}\n',
    "<div class=\"a\">&amp; &lt;tag&gt;</div>",
    "a\u00a0b\u3000c\u2028d\u0085e",
    "x\u0301 e\u0300 combining marks",
    "superscripts x² ³ ½ and Arabic-Indic ٣٤٥ and full-width １２３",
    "<|im_start|>user\nHi<|im_end|>",
    "text with <|endoftext|> inside and <|im_end|><|im_start|> adjacent",
    "<|im_start|><|im_start|>",
    "almost special <|im_start| and <im_end|>",
    "<filename>src/main.rs<file_sep><gh_stars>42",
    # Bytes without a byte token in SmolLM2's vocabulary: llama.cpp drops them.
    "\x04",
    "ctrl\x04chars\x13\x1d here",
    "plane 4: \U00040000 and plane 15: \U000F0000",
    LONG_PARAGRAPH,
]

CHATS = [
    {"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": True},
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3 + 3?\nExplain."},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "user", "content": "Tell me a joke."},
            {"role": "assistant", "content": "Why did the chicken cross the road?"},
        ],
        "add_generation_prompt": False,
    },
    {"messages": [], "add_generation_prompt": True},
]

# Codepoint pools for seeded random strings: they stress the pre-tokenizer's classes
# (letters, numbers, whitespace variants, punctuation, marks, symbols) and their borders.
POOLS = [
    "abcxyzABCXYZ",
    "0123456789",
    " ",
    "    \t\n\r\x0b\x0c",
    "\u00a0\u1680\u2000\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u0085",
    "'sStmdrevl",
    ".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`\"",
    "éüñçøåßÆŒ",
    "²³¹¼½¾٠١٢३४৫",
    "中文日本語한국어",
    "\u0301\u0308\u0327\u093f\u0e31",
    "👍🏽🎉😀❤️\u200d",
    "\x00\x01\x04\x13\x1f\x7f",
    "ǅǈ",  # titlecase letters
    "\U0001d400\U0001d7ce\U00010400",  # math bold A, math digit 0, Deseret
    "\ue000\U000e0001\ufeff",  # private use, tag, BOM
]


def random_cases(n, seed=20260101):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        s = []
        for _ in range(k):
            pool = rng.choice(POOLS)
            s.append(rng.choice(pool))
        out.append("".join(s))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DEAI_MODEL_PATH")
    if not path:
        sys.exit("usage: gen_tokenizer_fixture.py MODEL.gguf (or set DEAI_MODEL_PATH)")

    import jinja2
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)

    def tok(text):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    template = jinja2.Environment(loader=jinja2.BaseLoader()).from_string(
        llm.metadata["tokenizer.chat_template"]
    )

    cases = [{"text": t, "ids": tok(t)} for t in CASES]
    cases += [{"text": t, "ids": tok(t)} for t in random_cases(80)]
    chats = []
    for c in CHATS:
        prompt = template.render(
            messages=c["messages"], add_generation_prompt=c["add_generation_prompt"]
        )
        chats.append(dict(c, prompt=prompt, ids=tok(prompt)))

    # One case per line keeps the file reviewable and its diffs small.
    def dump(v):
        return json.dumps(v, ensure_ascii=True, separators=(", ", ": "))

    lines = ["{"]
    lines.append(f' "model_sha256": {dump(sha256_file(path))},')
    lines.append(f' "llama_cpp_python_version": {dump(llama_cpp.__version__)},')
    lines.append(
        ' "tokenize_call": '
        + dump("Llama.tokenize(text.encode(), add_bos=False, special=True)")
        + ","
    )
    lines.append(' "cases": [')
    lines.append(",\n".join("  " + dump(c) for c in cases))
    lines.append(" ],")
    lines.append(' "chats": [')
    lines.append(",\n".join("  " + dump(c) for c in chats))
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # sanity check
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {len(cases)} cases and {len(chats)} chats to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
