#!/usr/bin/env python3
"""Cross-check of the tokenizer against an implementation nobody here wrote: PyPI `tokenizers`.

Trains a small byte-level BPE with DeepSeek V3's pre-tokenizer configuration (the Sequence of three
Isolated Splits from its tokenizer.json, then ByteLevel without its own regex) plus DeepSeek's special
tokens, writes a tokenizer-only GGUF with gguf-py (tokens + merges in GPT-2 byte-encoded form, no
tensors), and requires `flashstar run --dump-tokens --pretokenizer deepseek-v3` to give HF's ids on every
corpus line. The default (ds4-compatible) splitter is also run: it must agree with HF on the ASCII part of
the corpus; where it differs outside ASCII the differences are counted and printed (documented in
src/text/pretokenize.h). Finally a ~100k-token mixed prompt must tokenize in well under a second.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<think>", "</think>", "｜DSML｜"]

MAIN_RE = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
           " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")

TRAIN_TEXT = """
The quick brown fox jumps over the lazy dog. It's 2024-05-17 and the price is $1,234.56 (roughly).
def tokenize(text: str) -> list[int]:
    # Split into pieces, then merge byte pairs by rank.
    for i, piece in enumerate(pieces):
        if piece.startswith("  ") and not piece.endswith("\\n"):
            yield {"id": i, "text": piece, 'ok': True}
    return [x for x in range(10) if x % 2 == 0]
#include <stdio.h>
int main(void) { printf("hello, world\\n"); return 0; }
struct Foo { int x; float y; }; // comment with CamelCase and snake_case_names
    if (a && b || !c) { x += 1; y -= 2; z *= 3; } else { w /= 4; }
日本語のテキストです。カタカナとひらがな。中文文本，包括标点符号！我们今天去公园散步。
한국어 텍스트도 조금 있습니다. Русский текст тоже есть. Ελληνικά γράμματα. العربية
Émoji: 😀 😃 🎉 👍🏽 👨‍👩‍👧 ❤️ ✨ — “quoted” ‘single’ … «guillemets» ¿Qué tal? ¡Hola! naïve café résumé
Numbers: 0 1 12 123 1234 12345 123456 3.14159 1e-9 0xFF 0b1010 ١٢٣ １２３ ² ½ Ⅻ ①
Whitespace:\t\ttabs  and   spaces    and\r\nwindows\n\n\nnewlines   \n  \t \n
Markdown: **bold** _italic_ `code` [link](http://example.com/path?q=1&r=2#frag) > quote
JSON: {"key": [1, 2, 3], "nested": {"a": null, "b": true, "c": "str"}}
""" * 3

CORPUS = [
    "Hello world",
    "  leading and trailing spaces  ",
    "one two  three   four    five",
    "line one\nline two\n\n\nline three\r\nline four",
    "tabs\tand\t\ttabs\t{ x }",
    "1 12 123 1234 12345 1234567890 3.14159",
    "version 3.14.159 and 2026-08-04T10:20:30Z",
    "snake_case camelCase kebab-case SCREAMING_CASE",
    "punctuation!!! ??? ...ellipsis ;;; >>= <<= ->* ::",
    "    int main(void) {\n        return 0;\n    }\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "def f(x):\n    return x**2  # square\n\n\nclass A:\n    pass\n",
    "<div class=\"row\">\n  <span>text</span>\n</div>",
    "x = {\"a\": [1, 2, 3], 'b': None}",
    "日本語のテキストです。",
    "中文文本，包括标点符号！",
    "a 中文 b 日本 c",
    "abc中文def",
    "한국어 텍스트",
    "Русский текст",
    "naïve café résumé Zürich",
    "emoji 😀😃 👍🏽 👨‍👩‍👧 ❤️ ✨!",
    "“smart quotes” and ‘single’ … — –",
    "١٢٣ １２３ ² ½ Ⅻ ①②",
    "\u00a0nbsp\u00a0 and\u3000ideographic space and \u0085NEL",
    "\x01control\x02chars\x7f",
    "trailing newline\n",
    "\n\n\nstarts with newlines",
    "     ",
    "a" * 300,
    " " * 50 + "x",
    "\t" * 20 + "{",
    "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi there<｜Assistant｜><think>hmm</think>Hello!<｜end▁of▁sentence｜>",
    "text with <think> inside and ｜DSML｜ marker and </think>",
    "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"read\">\n<｜DSML｜parameter name=\"path\" string=\"true\">a.c</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
    "Mixed: The 3 quick 狐狸 jumped 🦊 over 12,345 lazy 犬. ¿Qué? ¡Sí!\n\t- item\n\t- item2",
]


def gpt2_bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def is_ascii_only(s):
    return all(ord(c) < 128 for c in s)


def extra_texts():
    """More varied training text (Python's own sources) so the vocabulary reaches a few thousand merges."""
    import textwrap, json.decoder, argparse as ap_mod
    out = []
    for mod in (textwrap, json.decoder, ap_mod):
        with open(mod.__file__, encoding="utf-8") as f:
            out.append(f.read())
    return out


def build_tokenizer(vocab_size):
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, trainers, decoders
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\\p{N}{1,3}"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex("[一-龥぀-ゟ゠-ヿ]+"), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(MAIN_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAIN_TEXT] + CORPUS + extra_texts(), trainer=trainer)
    return tok


def write_gguf(tok, path):
    import gguf
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    merges = data["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    n = max(vocab.values()) + 1
    for t in data.get("added_tokens", []):
        n = max(n, t["id"] + 1)
    tokens = [""] * n
    for s, i in vocab.items():
        tokens[i] = s
    for t in data.get("added_tokens", []):
        tokens[t["id"]] = t["content"]
    w = gguf.GGUFWriter(path, "deepseek4")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens, merges


def dump_tokens(flashstar, gguf_path, text_path, pre):
    cmd = [flashstar, "run", "-m", gguf_path, "--dump-tokens", "--prompt-file", text_path]
    if pre:
        cmd += ["--pretokenizer", pre]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True)
    dt = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')}")
    first = r.stdout.split(b"\n", 1)[0]
    return json.loads(first), dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--vocab-size", type=int, default=3000)
    args, _ = ap.parse_known_args()
    try:
        import tokenizers  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        print("SKIP: needs PyPI tokenizers and gguf:", e)
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    tok = build_tokenizer(args.vocab_size)
    tok.save(os.path.join(args.workdir, "tokenizer.json"))
    gguf_path = os.path.join(args.workdir, "tok-only.gguf")
    tokens, merges = write_gguf(tok, gguf_path)
    print(f"trained vocab {len(tokens)} tokens, {len(merges)} merges")

    failures = 0
    ds4_diff = 0
    total_ids = 0
    for k, text in enumerate(CORPUS):
        path = os.path.join(args.workdir, f"c{k}.txt")
        with open(path, "wb") as f:
            f.write(text.encode("utf-8"))
        want = tok.encode(text, add_special_tokens=False).ids
        total_ids += len(want)
        got, _ = dump_tokens(args.flashstar, gguf_path, path, "deepseek-v3")
        if got != want:
            failures += 1
            print(f"MISMATCH deepseek-v3 line {k}: {text!r}\n  hf:        {want}\n  flashstar: {got}")
            print("  hf pieces:", [tokens[i] for i in want])
            print("  fs pieces:", [tokens[i] if 0 <= i < len(tokens) else i for i in got])
        got_ds4, _ = dump_tokens(args.flashstar, gguf_path, path, None)
        if got_ds4 != want:
            ds4_diff += 1
            if is_ascii_only(text):
                failures += 1
                print(f"MISMATCH ds4 rules on ASCII line {k}: {text!r}\n  hf: {want}\n  ds4: {got_ds4}")
            else:
                print(f"note: ds4 rules differ from HF on non-ASCII line {k}: {text[:40]!r}")
    # A real source file (code, comments, docstrings) through both the HF and our tokenizer.
    src = extra_texts()[0][:20000]
    path = os.path.join(args.workdir, "src.txt")
    with open(path, "wb") as f:
        f.write(src.encode("utf-8"))
    want = tok.encode(src, add_special_tokens=False).ids
    total_ids += len(want)
    for pre in ("deepseek-v3", None):
        got, _ = dump_tokens(args.flashstar, gguf_path, path, pre)
        if got != want:
            failures += 1
            print(f"MISMATCH [{pre or 'ds4'}] on a Python source file")
    # Whole corpus in one go (special tokens included) exercises piece boundaries between lines.
    whole = "\n".join(CORPUS)
    path = os.path.join(args.workdir, "whole.txt")
    with open(path, "wb") as f:
        f.write(whole.encode("utf-8"))
    want = tok.encode(whole, add_special_tokens=False).ids
    got, _ = dump_tokens(args.flashstar, gguf_path, path, "deepseek-v3")
    if got != want:
        failures += 1
        print("MISMATCH on the whole corpus")
    print(f"corpus: {len(CORPUS)} lines, {total_ids} ids (+{len(want)} whole); deepseek-v3 mismatches: "
          f"{failures}; ds4-rule lines differing from HF (non-ASCII only): {ds4_diff}")

    # ~100k-token prompt: code, CJK, long whitespace runs. Timed end to end through the binary, so the
    # bound includes process start and reading the vocabulary.
    block = (TRAIN_TEXT + " " * 3000 + "\n" + "中文日本語" * 400 + "\t" * 500 + "x" * 2000 + "\n")
    big = block * 1
    while len(tok.encode(big, add_special_tokens=False).ids) < 100000:
        big += block
    path = os.path.join(args.workdir, "big.txt")
    with open(path, "wb") as f:
        f.write(big.encode("utf-8"))
    want = tok.encode(big, add_special_tokens=False).ids
    # Sanitizer builds run ~10x slower; the 1 s bound is for real builds.
    ldd = subprocess.run(["ldd", args.flashstar], capture_output=True, text=True).stdout
    limit = 10.0 if "libasan" in ldd else 1.0
    for pre in ("deepseek-v3", None):
        got, dt = dump_tokens(args.flashstar, gguf_path, path, pre)
        print(f"100k test [{pre or 'ds4'}]: {len(big)} bytes -> {len(got)} tokens in {dt:.3f}s (process total, "
              f"limit {limit:g}s)")
        if dt > limit:
            failures += 1
            print(f"FAIL: tokenizing ~100k tokens took longer than {limit:g} s")
        if pre and got != want:
            failures += 1
            print("MISMATCH on the 100k-token prompt")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
