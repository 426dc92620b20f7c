import sys, numpy as np
from probe import *
from openset import known, auroc, tem3
f, y = load("val.safetensors")
n_ep = int(sys.argv[1]); unknown = int(sys.argv[2])
variants = {"k1": (1, 1), "k2": (2, 1), "k4": (4, 1), "k2sw2": (2, 2), "k4sw2": (4, 2), "k1sw2": (1, 2), "k2sw3": (2, 3)}
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha, unknown=unknown)
        res = {}
        for si, sy, qi, qy, ui in eps:
            raw = pre(f[np.concatenate([si, qi, ui])], 1, None)
            ns, nq = len(si), len(qi)
            proto = norm(np.stack([raw[:ns][sy == k].mean(0) for k in range(5)]))
            cos = raw[ns:] @ proto.T
            kp = known(cos.max(1), 5, shots)
            res.setdefault("induct", []).append((cos.argmax(1)[:nq] == qy).mean())
            for name, (g, sw) in variants.items():
                w = kp ** g
                centre = (raw[:ns].sum(0) + (w[:, None] * raw[ns:]).sum(0)) / (ns + w.sum())
                X = norm(raw - centre)
                z, mu = tem3(X[:ns], sy, X[ns:], 5, w=w, sw=sw)
                res.setdefault(name, []).append((z.argmax(1)[:nq] == qy).mean())
        print(f"shots={shots} alpha={alpha}: " + " ".join(f"{k} {100*np.mean(v):.2f}" for k, v in res.items()), flush=True)
