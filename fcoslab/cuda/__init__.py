"""CuPy RawKernel backends of fcoslab.ops (filled in by the kernels issue)."""


def unavailable_reason():
    return "CuPy kernels are not part of this build yet"
