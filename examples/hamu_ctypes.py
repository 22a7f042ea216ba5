# examples/hamu_ctypes.py: ctypes bindings of libhamu (capi/hamu.h) for the Python examples, plus a minimal
# safetensors writer/reader (numpy only) to hand gradients to examples/engine_step for the equality check.
# The structures mirror hamu.h field for field; HAMU_API_VERSION is checked on load.
import ctypes
import json
import os
import struct

HAMU_API_VERSION = 1
HAMU_OK, HAMU_SKIPPED = 0, 1
HAMU_SCOPE_LAYER, HAMU_SCOPE_GLOBAL = 0, 1
HAMU_SPLIT_GRAD_NORM, HAMU_SPLIT_UNIFORM, HAMU_SPLIT_SOFTMAX_DP = 0, 1, 2
HAMU_PATH_AUTO, HAMU_PATH_GHOST, HAMU_PATH_MATERIALISE = 0, 1, 2
SCOPES = {"layer": HAMU_SCOPE_LAYER, "global": HAMU_SCOPE_GLOBAL}
SPLITS = {"grad-norm": HAMU_SPLIT_GRAD_NORM, "uniform": HAMU_SPLIT_UNIFORM, "softmax-dp": HAMU_SPLIT_SOFTMAX_DP}


class Block(ctypes.Structure):
    _fields_ = [("param", ctypes.c_void_p), ("retain_grad", ctypes.c_void_p), ("forget_grad", ctypes.c_void_p),
                ("count", ctypes.c_int64)]


class StepConfig(ctypes.Structure):
    _fields_ = [("method", ctypes.c_char_p), ("lr", ctypes.c_double), ("ratio", ctypes.c_double),
                ("clip", ctypes.c_double), ("scope", ctypes.c_int32), ("split", ctypes.c_int32),
                ("fixed_radius", ctypes.c_int32), ("radius", ctypes.c_double),
                ("continue_on_infeasible", ctypes.c_int32), ("stop_on_criterion", ctypes.c_int32),
                ("paper_compat", ctypes.c_int32), ("grad_dtype", ctypes.c_int32)]


class Report(ctypes.Structure):
    _fields_ = [(n, ctypes.c_double) for n in ("kappa", "kappa1", "kappa2", "retain_norm", "forget_norm",
                                              "retain_scale", "forget_scale", "angle_deg", "feasibility_margin",
                                              "stopping_margin")] + \
               [(n, ctypes.c_int32) for n in ("n_direct", "n_rectified", "n_colinear", "n_infeasible",
                                             "n_collateral", "n_blocks", "nonfinite", "criterion_met", "applied",
                                             "projected")]


class LinearSamples(ctypes.Structure):
    _fields_ = [("a", ctypes.c_void_p), ("g", ctypes.c_void_p), ("n", ctypes.c_int64)]


class LinearHardnessOut(ctypes.Structure):
    _fields_ = [("k", ctypes.c_void_p), ("kappa", ctypes.c_void_p), ("forget_norms", ctypes.c_void_p),
                ("retain_norms", ctypes.c_void_p), ("retain_grad", ctypes.c_void_p), ("path", ctypes.c_int32)]


class HamuError(RuntimeError):
    pass


class Library:
    """libhamu loaded from `path` (default: $HAMU_LIB, else build/libhamu.so)."""

    def __init__(self, path=None):
        path = path or os.environ.get("HAMU_LIB") or os.path.join("build", "libhamu.so")
        self.lib = lib = ctypes.CDLL(os.path.abspath(path))
        P = ctypes.POINTER
        sig = {
            "hamu_version": (ctypes.c_int, []),
            "hamu_status_name": (ctypes.c_char_p, [ctypes.c_int]),
            "hamu_context_create": (ctypes.c_int, [ctypes.c_char_p, P(ctypes.c_void_p)]),
            "hamu_context_destroy": (None, [ctypes.c_void_p]),
            "hamu_context_set_stream": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
            "hamu_context_synchronize": (ctypes.c_int, [ctypes.c_void_p]),
            "hamu_last_error": (ctypes.c_char_p, [ctypes.c_void_p]),
            "hamu_method_count": (ctypes.c_int, []),
            "hamu_method_name": (ctypes.c_char_p, [ctypes.c_int]),
            "hamu_step_config_init": (None, [P(StepConfig)]),
            "hamu_step": (ctypes.c_int, [ctypes.c_void_p, P(Block), ctypes.c_int64, P(StepConfig), P(Report),
                                         ctypes.c_void_p]),
            "hamu_linear_hardness": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                                    P(LinearSamples), P(LinearSamples), ctypes.c_int32,
                                                    P(LinearHardnessOut)]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        if lib.hamu_version() != HAMU_API_VERSION:
            raise HamuError(f"libhamu API version {lib.hamu_version()}, these bindings are for {HAMU_API_VERSION}")

    def methods(self):
        return [self.lib.hamu_method_name(i).decode() for i in range(self.lib.hamu_method_count())]

    def context(self, device="cpu"):
        return Context(self, device)

    def has_cuda(self):
        """True when this libhamu has a CUDA backend and sees a device."""
        ptr = ctypes.c_void_p()
        if self.lib.hamu_context_create(b"cuda:0", ctypes.byref(ptr)) != HAMU_OK:
            return False
        self.lib.hamu_context_destroy(ptr)
        return True


class Context:
    def __init__(self, hl, device):
        self.hl, self.lib = hl, hl.lib
        self.ptr = ctypes.c_void_p()
        st = self.lib.hamu_context_create(device.encode(), ctypes.byref(self.ptr))
        if st != HAMU_OK:
            raise HamuError(f"hamu_context_create({device}): {self.lib.hamu_last_error(None).decode()}")

    def close(self):
        if self.ptr:
            self.lib.hamu_context_destroy(self.ptr)
            self.ptr = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check(self, st, what):
        if st < 0:
            raise HamuError(f"{what}: {self.lib.hamu_status_name(st).decode()}: "
                            f"{self.lib.hamu_last_error(self.ptr).decode()}")
        return st

    def set_stream(self, stream_ptr):
        self.check(self.lib.hamu_context_set_stream(self.ptr, ctypes.c_void_p(stream_ptr)), "hamu_context_set_stream")

    def step(self, blocks, method="hamu-q", **kw):
        """blocks: [(param_ptr, retain_ptr, forget_ptr, count)]. Returns (status, Report)."""
        arr = (Block * len(blocks))(*[Block(p, r, f, n) for p, r, f, n in blocks])
        cfg = StepConfig()
        self.lib.hamu_step_config_init(ctypes.byref(cfg))
        cfg.method = method.encode()
        for k, v in kw.items():
            setattr(cfg, k, SCOPES[v] if k == "scope" else SPLITS[v] if k == "split" else v)
        rep = Report()
        st = self.check(self.lib.hamu_step(self.ptr, arr, len(blocks), ctypes.byref(cfg), ctypes.byref(rep), None),
                        "hamu_step")
        return st, rep


# ---- minimal safetensors (float32 only) -----------------------------------------------------------------

def save_safetensors(path, tensors):
    """tensors: {name: float32 numpy array}."""
    import numpy as np
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fp:
        fp.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    import numpy as np
    with open(path, "rb") as fp:
        data = fp.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + s:8 + n + e], dtype=np.float32).reshape(info["shape"])
    return out


def engine_step(engine_bin, tmpdir, thetas, rs, fs, method="hamu-q", lr=0.01, ratio=0.1, clip=1.0, scope="layer",
                split="grad-norm", radius=None, continue_on_infeasible=False):
    """Runs examples/engine_step (the engine's own FusedUpdate step) on the same data; returns the thetas after."""
    import subprocess
    src, dst = os.path.join(tmpdir, "in.safetensors"), os.path.join(tmpdir, "out.safetensors")
    t = {}
    for i, (a, r, f) in enumerate(zip(thetas, rs, fs)):
        t[f"theta.{i}"], t[f"r.{i}"], t[f"f.{i}"] = a, r, f
    save_safetensors(src, t)
    extra = ([f"radius={radius!r}"] if radius is not None else []) + (["continue=1"] if continue_on_infeasible else [])
    subprocess.run([engine_bin, src, dst, method, repr(lr), repr(ratio), repr(clip), scope, split] + extra, check=True,
                   stdout=subprocess.DEVNULL)
    out = load_safetensors(dst)
    return [out[f"theta.{i}"] for i in range(len(thetas))]
