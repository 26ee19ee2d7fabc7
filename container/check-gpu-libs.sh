#!/bin/sh
# Proves the GPU image carries its whole CUDA stack: every shared library that libmxnet.so needs,
# and every library those CUDA wheels ship (cuDNN opens its sub-libraries at run time), resolves
# inside the image. The one exception is libcuda.so.1: the driver's library, which the NVIDIA
# container runtime mounts from the host and an image must not bundle. Run at build time, and by
# the container tests.
set -eu

site=/opt/semseg/venv/lib/python3.11/site-packages
libmxnet=$site/mxnet/libmxnet.so
[ -f "$libmxnet" ] || { echo "no $libmxnet" >&2; exit 1; }

echo "libmxnet.so needs:"
ldd "$libmxnet" | grep -E 'lib(cuda|cudart|cublas|cudnn|nccl|cufft|cusolver|cusparse|curand|nvrtc|nvToolsExt)'

failed=0
for lib in "$libmxnet" $(find /opt/semseg/cuda -name '*.so*' -type f); do
    [ "$(head -c 4 "$lib" | tail -c 3)" = ELF ] || continue  # linker scripts and data files
    missing=$(ldd "$lib" | grep 'not found' | grep -v 'libcuda\.so\.1 ' || true)
    if [ -n "$missing" ]; then
        echo "$lib:" >&2
        echo "$missing" >&2
        failed=1
    fi
done
[ "$failed" = 0 ] || { echo "shared libraries missing from the image (listed above)" >&2; exit 1; }
echo "every shared library resolves in the image, except libcuda.so.1 (the host driver's)"
