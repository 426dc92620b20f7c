"""The numpy probe of research/transductive_probe/README.md: its shared helpers, and a first screen."""
import json, sys
import numpy as np
from safetensors.numpy import load_file

def load(path):
    import struct
    f = load_file(path)["features"].astype(np.float64)
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        meta = json.loads(fh.read(n))["__metadata__"]
    paths = json.loads(meta["images"])
    cls = [p.split("/")[-2] for p in paths]
    names = sorted(set(cls))
    y = np.array([names.index(c) for c in cls])
    return f, y

def norm(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

def episodes(y, rng, ways, shots, queries, count, alpha=None, unknown=0):
    classes = np.unique(y)
    by = {c: np.flatnonzero(y == c) for c in classes}
    out = []
    for _ in range(count):
        cs = rng.choice(classes, ways + unknown, replace=False)
        known, unk = cs[:ways], cs[ways:]
        if alpha is None:
            counts = np.full(ways, queries)
        else:
            while True:
                p = rng.dirichlet(np.full(ways, alpha))
                counts = rng.multinomial(ways * queries, p)
                if counts.min() >= 1:
                    break
        S, Q, qy = [], [], []
        for k, c in enumerate(known):
            pick = rng.choice(by[c], shots + counts[k], replace=False)
            S.append(pick[:shots]); Q.append(pick[shots:]); qy += [k] * counts[k]
        U = [rng.choice(by[c], queries, replace=False) for c in unk]
        out.append((np.concatenate(S), np.repeat(np.arange(ways), shots), np.concatenate(Q), np.array(qy),
                    np.concatenate(U) if U else np.zeros(0, int)))
    return out

def pre(x, power, centre):
    if power != 1:
        x = np.sign(x) * np.abs(x) ** power
    x = norm(x)
    if centre is not None:
        x = norm(x - centre)
    return x

def inductive(S, sy, Q, K):
    mu = norm(np.stack([S[sy == k].mean(0) for k in range(K)]))
    return Q @ mu.T

def tem(S, sy, Q, K, beta=10.0, iters=20, estimate_prior=True, a=1.0, sw=1.0, w=None):
    mu = norm(np.stack([S[sy == k].mean(0) for k in range(K)]))
    n_s = np.bincount(sy, minlength=K).astype(float)
    sums = np.stack([S[sy == k].sum(0) for k in range(K)])
    logpi = np.zeros(K)
    if w is None:
        w = np.ones(len(Q))
    for _ in range(iters):
        z = beta * Q @ mu.T + logpi
        z -= z.max(1, keepdims=True)
        r = np.exp(z); r /= r.sum(1, keepdims=True)
        rw = r * w[:, None]
        mu = (sw * sums + rw.T @ Q) / (sw * n_s + rw.sum(0))[:, None]
        mu = norm(mu)
        if estimate_prior:
            pi = (rw.sum(0) + a) / (rw.sum() + K * a)
            logpi = np.log(pi)
    z = beta * Q @ mu.T + logpi
    return z

if __name__ == "__main__":
    f, y = load(sys.argv[1])
    rng = np.random.default_rng(0)
    n_ep = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    mean_all = f.mean(0)
    for shots in (1, 5):
        for alpha in (None, 2.0):
            eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha)
            res = {}
            for name, fn in [
                ("proto", lambda S, sy, Q: inductive(S, sy, Q, 5)),
                ("skm-b10", lambda S, sy, Q: tem(S, sy, Q, 5, 10, 20, False)),
                ("tem-b10", lambda S, sy, Q: tem(S, sy, Q, 5, 10, 20, True)),
                ("tem-b20", lambda S, sy, Q: tem(S, sy, Q, 5, 20, 20, True)),
                ("tem-b5", lambda S, sy, Q: tem(S, sy, Q, 5, 5, 20, True)),
            ]:
                for prep in ("raw", "p05", "p05c"):
                    acc = []
                    for si, sy, qi, qy, ui in eps:
                        X = f[np.concatenate([si, qi])]
                        if prep == "raw":
                            X = pre(X, 1, None)
                        elif prep == "p05":
                            X = pre(X, 0.5, None)
                        else:
                            X0 = pre(X, 0.5, None)
                            X = pre(X, 0.5, X0.mean(0))
                        S, Q = X[: len(si)], X[len(si):]
                        acc.append((fn(S, sy, Q).argmax(1) == qy).mean())
                    res[f"{name}/{prep}"] = 100 * np.mean(acc)
            print(f"shots={shots} alpha={alpha}: " + "  ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
