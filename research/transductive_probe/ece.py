import sys, numpy as np
from probe import *
from openset import known, tem3
f, y = load("val.safetensors")
def ece(conf, right, bins=15):
    conf, right = np.array(conf), np.array(right, float); e = 0
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    for b in range(bins):
        m = idx == b
        if m.any(): e += m.mean() * abs(conf[m].mean() - right[m].mean())
    return e
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, 300, alpha)
        out = {}
        for si, sy, qi, qy, ui in eps:
            raw = pre(f[np.concatenate([si, qi])], 1, None); ns = len(si)
            proto = norm(np.stack([raw[:ns][sy == k].mean(0) for k in range(5)]))
            kp = known((raw[ns:] @ proto.T).max(1), 5, shots)
            w = kp ** 2
            centre = (raw[:ns].sum(0) + (w[:, None] * raw[ns:]).sum(0)) / (ns + w.sum())
            X = norm(raw - centre)
            z, mu = tem3(X[:ns], sy, X[ns:], 5, beta=30, w=w)
            for T in (0.5, 0.75, 1.0, 1.5):
                p = np.exp((z - z.max(1, keepdims=True)) * T); p /= p.sum(1, keepdims=True)
                c, r = out.setdefault(T, ([], []))
                c += list(p.max(1)); r += list(p.argmax(1) == qy)
        print(shots, alpha, " ".join(f"T{T}: acc {100*np.mean(r):.1f} conf {np.mean(c):.3f} ece {ece(c, r):.3f}" for T, (c, r) in out.items()))
