#!/usr/bin/env bash
# Downloads one of the DeepSeek V4 Flash GGUF files ds4 publishes (Hugging Face antirez/deepseek-v4-gguf),
# resumably (curl -C -, into NAME.part, renamed when complete), then prints the command that runs it.
#
#   scripts/download-model.sh q2|q4|q2-imatrix|q4-imatrix [--dir DIR] [--token TOKEN]
#
# q2*: 2-bit routed experts (IQ2_XXS gate/up, Q2_K down), about 81 GB; q4*: Q4_K experts, about 153 GB.
# The -imatrix files are the ones ds4 recommends. DIR defaults to $FLASHSTAR_GGUF_DIR or ./gguf; TOKEN to
# $HF_TOKEN (the files are public; a token only helps with rate limits).
set -euo pipefail

REPO="antirez/deepseek-v4-gguf"
usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

[ $# -ge 1 ] || usage
target=$1
shift
case "$target" in
  q2) file="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf" ;;
  q2-imatrix) file="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf" ;;
  q4) file="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf" ;;
  q4-imatrix) file="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf" ;;
  -h | --help) usage 0 ;;
  *) echo "download-model: unknown target '$target' (expected q2, q4, q2-imatrix or q4-imatrix)" >&2; exit 2 ;;
esac

dir=${FLASHSTAR_GGUF_DIR:-gguf}
token=${HF_TOKEN:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --token) token=${2:?--token needs a value}; shift 2 ;;
    *) echo "download-model: unknown option '$1'" >&2; exit 2 ;;
  esac
done

command -v curl >/dev/null || { echo "download-model: curl is required" >&2; exit 1; }
mkdir -p "$dir"
out="$dir/$file"
url="https://huggingface.co/$REPO/resolve/main/$file"

if [ -s "$out" ]; then
  echo "download-model: $out is already complete"
else
  echo "download-model: $url -> $out.part (rerun to resume)"
  auth=()
  [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
  # -C - continues from the size of the .part file; --retry covers dropped connections mid-file.
  curl -fL --retry 5 --retry-delay 5 --progress-meter -C - "${auth[@]}" -o "$out.part" "$url"
  mv -f "$out.part" "$out"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/build/flashstar"
[ -x "$bin" ] || bin="flashstar"
echo
echo "Run it with:"
echo "  $bin run -m $out -p \"Hello\""
echo "  $bin run -m $out --chat"
