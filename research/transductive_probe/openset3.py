import sys, numpy as np
from probe import *
from openset import known, auroc, tem3
f, y = load("val.safetensors")
n_ep = int(sys.argv[1]); unknown = int(sys.argv[2])
def adapt(kp, iters=50, rho0=0.5):
    kp = np.clip(kp, 1e-6, 1 - 1e-6)
    lr = kp / (1 - kp) * (1 - rho0) / rho0
    rho = 0.5
    for _ in range(iters):
        post = rho * lr / (rho * lr + 1 - rho)
        rho = np.clip(post.mean(), 1e-3, 1 - 1e-3)
    return post, rho
variants = {"k1": (1, None), "k2": (2, None), "ad": (1, 0.5), "ad2": (2, 0.5), "ad.3": (1, 0.3), "ad.7": (1, 0.7)}
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha, unknown=unknown)
        res = {}; rhos = []
        for si, sy, qi, qy, ui in eps:
            raw = pre(f[np.concatenate([si, qi, ui])], 1, None)
            ns, nq = len(si), len(qi)
            proto = norm(np.stack([raw[:ns][sy == k].mean(0) for k in range(5)]))
            cos = raw[ns:] @ proto.T
            kp = known(cos.max(1), 5, shots)
            res.setdefault("induct", []).append((cos.argmax(1)[:nq] == qy).mean())
            for name, (g, r0) in variants.items():
                if r0 is None: w = kp ** g
                else:
                    w, rho = adapt(kp, rho0=r0); w = w ** g
                    if name == "ad": rhos.append(rho)
                centre = (raw[:ns].sum(0) + (w[:, None] * raw[ns:]).sum(0)) / (ns + w.sum())
                X = norm(raw - centre)
                z, mu = tem3(X[:ns], sy, X[ns:], 5, w=w)
                res.setdefault(name, []).append((z.argmax(1)[:nq] == qy).mean())
        print(f"u={unknown} shots={shots} alpha={alpha} rho={np.mean(rhos):.2f}: " + " ".join(f"{k} {100*np.mean(v):.2f}" for k, v in res.items()), flush=True)
