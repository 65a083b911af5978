"""Shared by the tests/python/test_server_*.py scripts: make a tiny synthetic model, start
`flashstar serve` on a free loopback port, read its log, stop it. Not a test itself."""
import argparse
import os
import re
import signal
import subprocess
import time
import urllib.request


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--shared", default="")
    ap.add_argument("--workdir", required=True)
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    return args


def make_model(fs, workdir, seed=1):
    path = os.path.join(workdir, f"tiny{seed}.gguf")
    if not os.path.exists(path):
        subprocess.run([fs, "synth", "--preset", "tiny", "--seed", str(seed), "-o", path], check=True,
                       capture_output=True)
    return path


def sanitized(fs):
    """True for an ASan/UBSan build (much slower; tests scale their sizes down)."""
    try:
        out = subprocess.run(["nm", "-D", "--defined-only", fs], capture_output=True, timeout=30).stdout
        if b"__asan" in out:
            return True
        out = subprocess.run(["nm", fs], capture_output=True, timeout=60).stdout
        return b"__asan_init" in out
    except Exception:
        return False


class Server:
    def __init__(self, fs, model, workdir, extra=(), name="serve", ctx=4096):
        self.log_path = os.path.join(workdir, name + ".log")
        self.log_file = open(self.log_path, "wb")
        cmd = [fs, "serve", "-m", model, "--port", "0", "--backend", "cpu", "--ctx", str(ctx), "--test-hooks",
               "-t", "2", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.url = None
        deadline = time.time() + 120
        while time.time() < deadline:
            m = re.search(r"listening on (http://[0-9.]+:\d+)", self.log())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.url:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def get(self, path, headers=None):
        req = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()

    def metrics(self):
        out = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def sdk_modules():
    """Imports openai and anthropic, installing them with pip when missing; None when impossible."""
    try:
        import openai, anthropic  # noqa: F401
        return openai, anthropic
    except ImportError:
        pass
    for extra in ([], ["--break-system-packages"]):
        r = subprocess.run(["python3", "-m", "pip", "install", "-q", *extra, "openai", "anthropic"],
                           capture_output=True)
        if r.returncode == 0:
            break
    try:
        import importlib
        importlib.invalidate_caches()
        import openai, anthropic  # noqa: F401
        return openai, anthropic
    except ImportError:
        return None
