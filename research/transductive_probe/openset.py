import sys, numpy as np
from probe import *


W = [-10.967396704959661, 15.410423075756237, 0.5434514996226452, -0.4822527130236435]
def known(m, K, shots):
    return 1 / (1 + np.exp(-(W[0] + W[1] * m + W[2] * np.log(K) + W[3] * np.log(shots))))

def auroc(pos, neg):
    s = np.concatenate([pos, neg]); r = s.argsort().argsort() + 1
    return (r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))

def tem3(S, sy, Q, K, beta=30, iters=30, a=1.0, sw=1.0, w=None):
    sums = np.stack([S[sy == k].sum(0) for k in range(K)])
    mu = norm(sums); logpi = np.zeros(K)
    w = np.ones(len(Q)) if w is None else w
    for _ in range(iters):
        z = beta * Q @ mu.T + logpi
        z -= z.max(1, keepdims=True)
        r = np.exp(z); r /= r.sum(1, keepdims=True)
        rw = r * w[:, None]
        pi = (rw.sum(0) + a) / (rw.sum() + K * a)
        mu = norm(sw * sums + rw.T @ Q); logpi = np.log(pi)
    return beta * Q @ mu.T + logpi, mu

if __name__ == "__main__":
    for shots in (1, 5):
      for alpha in (None, 2.0):
          eps = episodes(y, np.random.default_rng(1), 5, shots, 15, n_ep, alpha, unknown=5)
          res = {}
          for si, sy, qi, qy, ui in eps:
              raw = pre(f[np.concatenate([si, qi, ui])], 1, None)
              ns, nq = len(si), len(qi)
              proto = norm(np.stack([raw[:ns][sy == k].mean(0) for k in range(5)]))
              cos = raw[ns:] @ proto.T
              kp = known(cos.max(1), 5, shots)
              def add(name, pred, score):
                  res.setdefault(name, []).append(((pred[:nq] == qy).mean(), auroc(score[:nq], score[nq:])))
              add("induct", cos.argmax(1), kp)
              for cm in ("c", "cs", "cw"):
                  for wname in ("w1", "wk"):
                      w = np.ones(len(raw) - ns) if wname == "w1" else kp
                      if cm == "c": centre = raw.mean(0)
                      elif cm == "cs": centre = raw[:ns].mean(0)
                      else: centre = (raw[:ns].sum(0) + (w[:, None] * raw[ns:]).sum(0)) / (ns + w.sum())
                      X = norm(raw - centre)
                      z, mu = tem3(X[:ns], sy, X[ns:], 5, w=w)
                      # known prob from refined prototypes in raw space
                      r = np.exp(z - z.max(1, keepdims=True)); r /= r.sum(1, keepdims=True)
                      mu_raw = norm(np.stack([raw[:ns][sy == k].sum(0) for k in range(5)]) + (r * w[:, None]).T @ raw[ns:])
                      kp2 = known((raw[ns:] @ mu_raw.T).max(1), 5, shots)
                      add(f"{cm}/{wname}", z.argmax(1), kp)
                      add(f"{cm}/{wname}/kp2", z.argmax(1), kp2)
          print(f"shots={shots} alpha={alpha}: " + " ".join(f"{k} {100*np.mean([a for a,_ in v]):.2f}/{np.mean([b for _,b in v]):.3f}" for k, v in res.items()), flush=True)
