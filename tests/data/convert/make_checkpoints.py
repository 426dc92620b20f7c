"""Writes the PyTorch checkpoints `mgecl convert` is tested on, and PyTorch's features for them.

    python tests/data/convert/make_checkpoints.py        # from the repository root
    python tests/data/convert/make_checkpoints.py --fuzz-seeds fuzz/corpus/convert_checkpoint

Needs torch, numpy and Pillow (scripts/bench/requirements.txt). Uses the RFS reference models of
crates/mgecl-train/tests/data/train/ref_models.py. Writes, next to this script:

| file | what |
|---|---|
| resnet12_rfs.pth | RFS/MGECL style: {'opt': argparse.Namespace, 'model': state_dict with `classifier.*` and `num_batches_tracked`, 'optimizer': SGD state, 'epoch': 90} |
| resnet12_dataparallel.pth | bare state dict of nn.DataParallel(model): every key under `module.` |
| conv4_rfs.pth | Conv-4 in the RFS dict (Namespace, head, counters) |
| conv4_bare.pth | bare Conv-4 state dict, nothing else |
| conv4_nested_dataparallel.pth | {'checkpoint': {'state_dict': DataParallel state dict}, 'note': str} |
| conv4_strided_f64.pth | bare Conv-4 state dict in float64, conv weights stored transposed (non-contiguous strides) |
| conv4_legacy.pth | the bare Conv-4 state dict in the legacy (pre-1.6, non-zip) format |
| expected.json | per checkpoint: the --meta it needs, the images, PyTorch's features |

Features are the float64 forward (eval mode) of the float32 weights on the inputs normalised in
float64: the same reference as tests/data/*_expected.safetensors.

With --fuzz-seeds DIR it writes instead tiny checkpoints of the same shapes (1 input channel,
widths of 2-4: a few KB each) as seeds for the convert_checkpoint fuzz target.
"""
import argparse
import copy
import json
import os
import sys
import zipfile

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "crates", "mgecl-train", "tests", "data", "train"))
import ref_models  # noqa: E402


def randomise(model, seed):
    """RFS init, then BN statistics and affine parameters drawn so every term matters."""
    torch.manual_seed(seed)
    ref_models.rfs_init(model, "leaky_relu" if isinstance(model, ref_models.ResNet12) else "relu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(1234)
    return model


def images(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    return [os.path.join(folder, n) for n in names]


def features(model, paths, mean, std):
    batch = []
    for path in paths:
        pixels = np.asarray(Image.open(path), dtype=np.float64) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[None]
        else:
            pixels = pixels.transpose(2, 0, 1)
        m = np.asarray(mean, dtype=np.float64)[:, None, None]
        s = np.asarray(std, dtype=np.float64)[:, None, None]
        batch.append((pixels - m) / s)
    x = torch.from_numpy(np.stack(batch))
    reference = ref_models.load_weights(type(model)(**model.kwargs), {
        k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")
    }).double().eval()
    with torch.no_grad():
        return reference(x).tolist()


def rfs_namespace(model_name):
    # What RFS's train_supervised.py parses (a subset), pickled as an argparse.Namespace.
    return argparse.Namespace(
        model=model_name, dataset="miniImageNet", epochs=90, learning_rate=0.05,
        lr_decay_epochs=[60, 80], lr_decay_rate=0.1, weight_decay=5e-4, momentum=0.9,
        batch_size=64, n_ways=5, n_shots=1, use_trainval=False, adam=False, tags=None,
    )


def with_head(model, classes):
    model.classifier = nn.Linear(model.feature_dim if isinstance(model.feature_dim, int)
                                 else model.feature_dim(), classes)
    return model


def sgd_state(model):
    # On a copy: the step must not change the weights being saved.
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = sum(p.sum() for p in model.parameters())
    loss.backward()
    opt.step()
    return opt.state_dict()


def fuzz_seeds(folder):
    os.makedirs(folder, exist_ok=True)
    resnet = with_head(randomise(ref_models.ResNet12(widths=(2, 2, 3, 4), in_channels=1), 3), 3)
    conv = randomise(ref_models.Conv4(in_channels=1, width=2), 4)
    torch.save({"opt": rfs_namespace("resnet12"), "model": resnet.state_dict(),
                "optimizer": sgd_state(resnet), "epoch": 1},
               os.path.join(folder, "seed-resnet12-rfs.pth"))
    torch.save(nn.DataParallel(conv).state_dict(), os.path.join(folder, "seed-conv4-dataparallel.pth"))
    torch.save({"checkpoint": {"state_dict": {k: v.double() if v.is_floating_point() else v
                                              for k, v in conv.state_dict().items()}}},
               os.path.join(folder, "seed-conv4-nested-f64.pth"))
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in conv.state_dict().items()},
               os.path.join(folder, "seed-conv4-f16.pth"))
    # Each pickle alone too: the target also runs an input as the data.pkl of a checkpoint.
    for name in sorted(os.listdir(folder)):
        if name.startswith("seed-") and name.endswith(".pth"):
            with zipfile.ZipFile(os.path.join(folder, name)) as archive:
                pickle = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
                with open(os.path.join(folder, name[:-4] + ".pkl"), "wb") as f:
                    f.write(archive.read(pickle))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--fuzz-seeds":
        return fuzz_seeds(sys.argv[2])
    out = {}
    data = os.path.join(ROOT, "tests", "data")
    rgb = images(os.path.join(data, "resnet12_small_inputs"))
    grey = images(os.path.join(data, "conv4_gray_inputs"))
    rel = lambda paths: [os.path.relpath(p, HERE) for p in paths]  # noqa: E731

    # ResNet-12, 3 channels, 84x84, narrow widths to keep the files small.
    resnet_kwargs = dict(widths=(8, 16, 24, 32), in_channels=3)
    resnet = with_head(randomise(ref_models.ResNet12(**resnet_kwargs), 1), 64)
    resnet.kwargs = resnet_kwargs
    resnet_meta = {"image_size": "84", "mean": json.dumps(list(ref_models.RFS_MEAN)),
                   "std": json.dumps(list(ref_models.RFS_STD))}
    resnet_features = features(resnet, rgb, ref_models.RFS_MEAN, ref_models.RFS_STD)
    torch.save({"opt": rfs_namespace("resnet12"), "model": resnet.state_dict(),
                "optimizer": sgd_state(resnet), "epoch": 90},
               os.path.join(HERE, "resnet12_rfs.pth"))
    torch.save(nn.DataParallel(resnet).state_dict(), os.path.join(HERE, "resnet12_dataparallel.pth"))
    for name in ("resnet12_rfs", "resnet12_dataparallel"):
        out[name] = {"arch": "resnet12", "widths": [8, 16, 24, 32], "meta": resnet_meta,
                     "images": rel(rgb), "features": resnet_features}

    # Conv-4, 1 channel, 28x28.
    conv_kwargs = dict(in_channels=1, width=32)
    conv = randomise(ref_models.Conv4(**conv_kwargs), 2)
    conv.kwargs = conv_kwargs
    conv_meta = {"image_size": "28", "mean": "[0.9]", "std": "[0.25]"}
    conv_features = features(conv, grey, [0.9], [0.25])
    torch.save(conv.state_dict(), os.path.join(HERE, "conv4_bare.pth"))
    torch.save({"checkpoint": {"state_dict": nn.DataParallel(conv).state_dict()},
                "note": "nested, DataParallel"},
               os.path.join(HERE, "conv4_nested_dataparallel.pth"))
    strided = {k: (v.double().transpose(2, 3).contiguous().transpose(2, 3) if v.dim() == 4
                   else v.double() if v.is_floating_point() else v)
               for k, v in conv.state_dict().items()}
    assert not strided["layer1.0.weight"].is_contiguous()
    torch.save(strided, os.path.join(HERE, "conv4_strided_f64.pth"))
    torch.save(conv.state_dict(), os.path.join(HERE, "conv4_legacy.pth"),
               _use_new_zipfile_serialization=False)
    conv_head = with_head(conv, 20)
    torch.save({"opt": rfs_namespace("convnet4"), "model": conv_head.state_dict(), "epoch": 90},
               os.path.join(HERE, "conv4_rfs.pth"))
    for name in ("conv4_bare", "conv4_nested_dataparallel", "conv4_strided_f64", "conv4_rfs"):
        out[name] = {"arch": "conv4", "widths": [32, 32, 32, 32], "meta": conv_meta,
                     "images": rel(grey), "features": conv_features}

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump({"generated_with": f"torch {torch.__version__}", "checkpoints": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
