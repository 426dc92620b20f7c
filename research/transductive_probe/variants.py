import sys, numpy as np
from probe import *
from openset import known
f, y = load("val.safetensors")
n_ep = int(sys.argv[1]); unknown = int(sys.argv[2])

def refine(raw_s, sy, raw_q, kp, g=2.0, beta=30, iters=30, a=1.0, K=5):
    w = np.clip(kp, 0, 1) ** g
    ns = len(raw_s)
    centre = (raw_s.sum(0) + w @ raw_q) / (ns + w.sum())
    S, Q = norm(raw_s - centre), norm(raw_q - centre)
    onehot = np.eye(K)[sy]
    sums = onehot.T @ S
    mu = norm(sums); logpi = np.zeros(K)
    for _ in range(iters):
        z = beta * Q @ mu.T + logpi; z -= z.max(1, keepdims=True)
        r = np.exp(z); r /= r.sum(1, keepdims=True); r *= w[:, None]
        mu = norm(sums + r.T @ Q)
        m = r.sum(0); logpi = np.log((m + a) / (m.sum() + K * a))
    z = beta * Q @ mu.T + logpi; z -= z.max(1, keepdims=True)
    r = np.exp(z); r /= r.sum(1, keepdims=True); r *= w[:, None]
    return norm(onehot.T @ raw_s + r.T @ raw_q)

V = {"k2": dict(g=2), "k1": dict(g=1), "k1.5": dict(g=1.5), "k2b20": dict(g=2, beta=20), "k2b45": dict(g=2, beta=45), "k2a3": dict(g=2, a=3)}
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha, unknown=unknown)
        res = {}
        for si, sy, qi, qy, ui in eps:
            raw = pre(f[np.concatenate([si, qi, ui])], 1, None)
            ns, nq = len(si), len(qi)
            S, Q = raw[:ns], raw[ns:]
            proto = norm(np.eye(5)[sy].T @ S)
            kp = known((Q @ proto.T).max(1), 5, shots)
            res.setdefault("induct", []).append(((Q @ proto.T).argmax(1)[:nq] == qy).mean())
            for name, kw in V.items():
                mu = refine(S, sy, Q, kp, **kw)
                res.setdefault(name, []).append(((Q @ mu.T).argmax(1)[:nq] == qy).mean())
            # two-stage
            mu = refine(S, sy, Q, kp, g=2)
            kp2 = known((Q @ mu.T).max(1), 5, shots)
            mu2 = refine(S, sy, Q, kp2, g=2)
            res.setdefault("2stage", []).append(((Q @ mu2.T).argmax(1)[:nq] == qy).mean())
        print(f"u={unknown} shots={shots} alpha={alpha}: " + " ".join(f"{k} {100*np.mean(v):.2f}" for k, v in res.items()), flush=True)
