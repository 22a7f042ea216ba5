#!/usr/bin/env python3
# examples/python_numpy.py: libhamu from Python with ctypes on numpy arrays (no framework): a softmax
# regression whose gradients numpy computes, unlearned one class with HAMU-Q through hamu_step on the arrays'
# own memory; the first step is checked to be bit-identical to the engine's step on the same gradients
# (examples/engine_step), and the Linear hardness call is checked against per-sample gradients formed in numpy.
#
# Usage: python_numpy.py BUILD_DIR   (BUILD_DIR holds libhamu.so and examples/engine_step)
import os
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("python_numpy: skipped: numpy is not importable (Debian: apt install python3-numpy)")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hamu_ctypes as hc  # noqa: E402


def ptr(a):
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data


def softmax_grads(w, b, x, y):
    """Mean cross-entropy gradient of softmax regression; also the loss and the logits' gradient."""
    z = x @ w.T + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    return (dz.T @ x).astype(np.float32), dz.sum(axis=0).astype(np.float32), loss, dz


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    hl = hc.Library(os.path.join(build, "libhamu.so"))
    print(f"python_numpy: libhamu API {hl.lib.hamu_version()}, methods {', '.join(hl.methods())}")
    rng = np.random.default_rng(0)
    classes, dim, n = 4, 8, 400
    centers = rng.normal(size=(classes, dim))
    y = np.arange(n) % classes
    x = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
    w = np.zeros((classes, dim), np.float32)
    b = np.zeros(classes, np.float32)
    for _ in range(200):
        gw, gb, _, _ = softmax_grads(w, b, x, y)
        w -= 0.5 * gw
        b -= 0.5 * gb
    forget = y == 3
    acc = lambda m: float(((x[m] @ w.T + b).argmax(1) == y[m]).mean())  # noqa: E731
    print(f"python_numpy: trained: retain accuracy {acc(~forget):.3f}, forget accuracy {acc(forget):.3f}")

    # The gradient buffers hamu reads; the step writes w and b in place.
    rw, rb, fw, fb = (np.zeros_like(w), np.zeros_like(b), np.zeros_like(w), np.zeros_like(b))
    blocks = [(ptr(w), ptr(rw), ptr(fw), w.size), (ptr(b), ptr(rb), ptr(fb), b.size)]
    cfg = dict(lr=0.5, ratio=0.1, fixed_radius=1, radius=0.3, continue_on_infeasible=1)
    engine_bin = os.path.join(build, "examples", "engine_step")
    with hl.context("cpu") as ctx, tempfile.TemporaryDirectory() as tmp:
        for step in range(1, 41):
            rw[...], rb[...], lr_loss, _ = softmax_grads(w, b, x[~forget], y[~forget])
            fw[...], fb[...], lf_loss, _ = softmax_grads(w, b, x[forget], y[forget])
            if step == 1:
                # The engine's step on the same gradients must give the same bits.
                want = hc.engine_step(engine_bin, tmp, [w, b], [rw, rb], [fw, fb], "hamu-q", 0.5, 0.1, 1.0,
                                      radius=0.3, continue_on_infeasible=True)
            st, rep = ctx.step(blocks, "hamu-q", **cfg)
            if step == 1:
                same = np.array_equal(w, want[0]) and np.array_equal(b, want[1])
                print(f"python_numpy: step 1 vs the engine's FusedUpdate on the same gradients: "
                      f"{'bit-identical' if same else 'DIFFERENT'} (applied {rep.applied}, kappa {rep.kappa:+.4f}, "
                      f"d{rep.n_direct}/r{rep.n_rectified}/c{rep.n_colinear}/i{rep.n_infeasible})")
                if not same or not rep.applied:
                    print("python_numpy: FAILED: max |diff|", np.abs(w - want[0]).max(), np.abs(b - want[1]).max())
                    return 1
            if step % 10 == 1:
                print(f"  step {step:2d}  retain loss {lr_loss:.4f}  forget loss {lf_loss:.4f}  kappa {rep.kappa:+.4f}")
            if st == hc.HAMU_SKIPPED:
                print(f"  step {step}: not applied, stopping")
                break
        print(f"python_numpy: unlearnt: retain accuracy {acc(~forget):.3f}, forget accuracy {acc(forget):.3f}")
        if not (acc(forget) < 0.2 and acc(~forget) > 0.85):
            print("python_numpy: FAILED: class 3 not forgotten or the others lost")
            return 1

        # Hardness of the layer from its captures: a = x (inputs), g = dz * n (per-sample loss gradients).
        xf, xr = x[forget][:20], x[~forget][:30]
        _, _, _, dzf = softmax_grads(w, b, xf, y[forget][:20])
        _, _, _, dzr = softmax_grads(w, b, xr, y[~forget][:30])
        gf, gr = (dzf * len(xf)).astype(np.float32), (dzr * len(xr)).astype(np.float32)
        k = np.zeros((20, 30), np.float32)
        kappa, nf, nr = np.zeros(20, np.float32), np.zeros(20, np.float32), np.zeros(30, np.float32)
        fs, rs = hc.LinearSamples(ptr(xf), ptr(gf), 20), hc.LinearSamples(ptr(xr), ptr(gr), 30)
        out = hc.LinearHardnessOut(ptr(k), ptr(kappa), ptr(nf), ptr(nr), None, -1)
        ctx.check(hl.lib.hamu_linear_hardness(ctx.ptr, dim, classes, 1, fs, rs, hc.HAMU_PATH_AUTO, out),
                  "hamu_linear_hardness")
        pf = np.einsum("no,ni->noi", gf.astype(np.float64), xf.astype(np.float64)).reshape(20, -1)
        pr = np.einsum("no,ni->noi", gr.astype(np.float64), xr.astype(np.float64)).reshape(30, -1)
        errs = [np.abs(k - pf @ pr.T).max() / np.abs(pf @ pr.T).max(),
                np.abs(kappa - pf @ pr.mean(0)).max() / np.abs(pf @ pr.mean(0)).max(),
                np.abs(nf - np.linalg.norm(pf, axis=1)).max() / np.linalg.norm(pf, axis=1).max()]
        print(f"python_numpy: Linear hardness ({'ghost' if out.path == 1 else 'materialise'} path) vs numpy: "
              f"relative errors K {errs[0]:.1e}, kappa {errs[1]:.1e}, norms {errs[2]:.1e}")
        if max(errs) > 1e-5:
            print("python_numpy: FAILED: hardness differs from numpy")
            return 1
    print("python_numpy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
