import sys, numpy as np
from probe import *
f, y = load("val.safetensors")
n_ep = int(sys.argv[1])
preps = sys.argv[2].split(",")
betas = [float(b) for b in sys.argv[3].split(",")]
for shots in (1, 5):
    for alpha in (None, 2.0):
        eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha)
        line = []
        for prep in preps:
            data = []
            for si, sy, qi, qy, ui in eps:
                X = f[np.concatenate([si, qi])]
                if prep == "raw": X = pre(X, 1, None)
                elif prep == "c": X = pre(X, 1, pre(X, 1, None).mean(0))
                elif prep == "cs": X = pre(X, 1, pre(X, 1, None)[:len(si)].mean(0))
                elif prep == "p05c": X = pre(X, 0.5, pre(X, 0.5, None).mean(0))
                data.append((X[:len(si)], sy, X[len(si):], qy))
            acc = np.mean([(inductive(S, sy, Q, 5).argmax(1) == qy).mean() for S, sy, Q, qy in data])
            line.append(f"{prep}:proto {100*acc:.2f}")
            for b in betas:
                for est in (False, True):
                    acc = np.mean([(tem(S, sy, Q, 5, b, 20, est).argmax(1) == qy).mean() for S, sy, Q, qy in data])
                    line.append(f"{'tem' if est else 'skm'}{b:g} {100*acc:.2f}")
        print(f"shots={shots} alpha={alpha}: " + " ".join(line), flush=True)
