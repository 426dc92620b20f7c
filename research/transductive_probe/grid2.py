import sys, numpy as np
from probe import *
f, y = load("val.safetensors")
n_ep = int(sys.argv[1])

def tem2(S, sy, Q, K, beta, iters=30, a=1.0, sw=1.0, damp=1.0, sink=False, power_r=1.0):
    n_s = np.bincount(sy, minlength=K).astype(float)
    sums = np.stack([S[sy == k].sum(0) for k in range(K)])
    mu = norm(sums)
    logpi = np.zeros(K)
    for _ in range(iters):
        z = beta * Q @ mu.T + logpi
        z -= z.max(1, keepdims=True)
        r = np.exp(z); r /= r.sum(1, keepdims=True)
        pi = (r.sum(0) + a) / (r.sum() + K * a)
        if sink:
            P = r.copy()
            for _ in range(20):
                P *= (pi * len(Q) / P.sum(0))[None]
                P /= P.sum(1, keepdims=True)
            r = P
        rr = r ** power_r
        new = norm(sw * sums + rr.T @ Q)
        mu = norm((1 - damp) * mu + damp * new)
        logpi = np.log(pi)
    return beta * Q @ mu.T + logpi

configs = {
 "base30": dict(beta=30),
 "a5": dict(beta=30, a=5),
 "sw2": dict(beta=30, sw=2),
 "damp.3": dict(beta=30, damp=0.3),
 "sink": dict(beta=30, sink=True),
 "sink10": dict(beta=10, sink=True),
 "r2": dict(beta=30, power_r=2),
}
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha)
        line = []
        for prep in sys.argv[2].split(","):
            data = []
            for si, sy, qi, qy, ui in eps:
                X = f[np.concatenate([si, qi])]
                if prep == "raw": X = pre(X, 1, None)
                elif prep == "c": X = pre(X, 1, pre(X, 1, None).mean(0))
                elif prep == "cs": X = pre(X, 1, pre(X, 1, None)[:len(si)].mean(0))
                data.append((X[:len(si)], sy, X[len(si):], qy))
            acc = np.mean([(inductive(S, sy, Q, 5).argmax(1) == qy).mean() for S, sy, Q, qy in data])
            line.append(f"{prep}:proto {100*acc:.2f}")
            for name, kw in configs.items():
                acc = np.mean([(tem2(S, sy, Q, 5, **kw).argmax(1) == qy).mean() for S, sy, Q, qy in data])
                line.append(f"{name} {100*acc:.2f}")
        print(f"shots={shots} alpha={alpha}: " + " ".join(line), flush=True)
