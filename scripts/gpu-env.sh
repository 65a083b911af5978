# Sourced by the GPU scripts (from the repository root): the libraries the binaries load at run time.
# .gpulib/ first (what the dev machine carries over), then the directory holding libcublasLt.so.13: the
# binaries link cuBLASLt dynamically (gemm_cublas.cu), and the GPU machine has it only inside a Python
# environment (the nvidia-cublas wheel for CUDA 13), where the loader does not look.
export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.13 '; then
  for fs_py in python3 /opt/torch/.venv/bin/python3; do
    fs_dir=$("$fs_py" -c '
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for root in nvidia.__path__:
    hits = glob.glob(os.path.join(root, "**", "libcublasLt.so.13"), recursive=True)
    if hits:
        print(os.path.dirname(hits[0]))
        break
' 2>/dev/null)
    if [ -n "$fs_dir" ]; then
      export LD_LIBRARY_PATH="$fs_dir:$LD_LIBRARY_PATH"
      break
    fi
  done
  unset fs_py fs_dir
fi
