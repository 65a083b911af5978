#!/usr/bin/env bash
# Installs what building and testing Flashstar needs, only where it is missing (Debian 12, as root).
set -euo pipefail

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in cmake ninja-build g++ make libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev python3 python3-pip clang \
         libclang-rt-14-dev pkg-config libpcre2-dev libedit-dev libcpp-httplib-dev; do
  have_pkg "$p" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages: ${need_apt[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import gguf, numpy, safetensors, tokenizers, openai, anthropic" 2>/dev/null; then
  echo "setup: installing Python packages gguf numpy safetensors tokenizers openai anthropic"
  python3 -m pip install -q gguf numpy safetensors tokenizers openai anthropic 2>/dev/null ||
    python3 -m pip install -q --break-system-packages gguf numpy safetensors tokenizers openai anthropic
fi
