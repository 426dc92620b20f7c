#!/bin/sh
# Stage 2 of the photo model, ablation arm "class + instance loss": 500 5-way 1-shot episodes (15 queries,
# 4 augmented views per support image) from the stage-1 encoder. Run from models/ ; MGECL
# points at the mgecl binary. Resumable: run again.
D=../../shared/data/miniimagenet
exec ${MGECL:-mgecl} metatrain --data $D/images \
    --include $D/splits/train_classes.txt --val-include $D/splits/val_classes.txt \
    --init runs/mini-r12w32/best.safetensors --augment imagenet \
    --episodes 500 --ways 5 --shots 1 --queries 15 --views 4 --margin 0.2 --tau 0.1 \
    --lambda 1 --lr 0.0005 --val-every 250 --val-episodes 300 --seed 0 \
    --out runs/mini-r12w32-both --resume "$@"
