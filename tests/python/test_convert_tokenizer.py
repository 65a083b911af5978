#!/usr/bin/env python3
"""`flashstar convert` embeds a checkpoint's tokenizer.json: a copy of tiny-a with a small BPE trained by
HF `tokenizers` converts, and `run --dump-tokens` on the result gives HF's ids (DeepSeek-V3 pre-tokenizer
rules, ASCII text)."""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_tokenizer_hf as th  # noqa: E402  (the training recipe is shared)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    a, _ = ap.parse_known_args()
    src = os.path.abspath(os.path.join(a.shared, "fixtures", "tiny-a"))
    if not os.path.isdir(src):
        print("SKIP: no tiny-a fixture")
        return 0
    os.makedirs(a.workdir, exist_ok=True)
    ckpt = os.path.join(a.workdir, "ckpt")
    os.makedirs(ckpt, exist_ok=True)
    for f in os.listdir(src):
        dst = os.path.join(ckpt, f)
        if not os.path.exists(dst):
            os.symlink(os.path.join(src, f), dst)
    vocab = json.load(open(os.path.join(src, "config.json")))["vocab_size"]
    tok = th.build_tokenizer(vocab)
    tok.save(os.path.join(ckpt, "tokenizer.json"))
    out = os.path.join(a.workdir, "a-tok.gguf")
    r = subprocess.run([a.flashstar, "convert", ckpt, "-o", out, "--outtype", "f32"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        return 1
    text = "def convert(path):\n    return open(path).read().split()  # 123 tokens, 4567 words\n"
    tf = os.path.join(a.workdir, "t.txt")
    open(tf, "w").write(text)
    ids, _ = th.dump_tokens(a.flashstar, out, tf, "deepseek-v3")
    want = tok.encode(text).ids
    print("flashstar:", ids[:16], "... hf:", want[:16], "...")
    if ids != want:
        print("FAIL: ids differ")
        return 1
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
