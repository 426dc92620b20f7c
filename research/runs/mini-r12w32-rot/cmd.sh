#!/bin/sh
# Stage 1 with the rotation head (issue 44): runs/mini-r12w32's command plus
# --rotation-weight 1 (EASY's 0.5 CE + 0.5 rotation at twice our learning rate is this loss at
# ours), so the two runs differ in the rotation loss only: same seed, initial encoder, shuffle
# and augmentation draws. Run from research/ ; MGECL points at the mgecl binary. Resumable:
# run again.
D=../../shared/data/miniimagenet
exec ${MGECL:-mgecl} pretrain --data $D/images \
    --include $D/splits/train_classes.txt --val-include $D/splits/val_classes.txt \
    --arch resnet12 --widths 32,80,160,320 --channels 3 --image-size 84 \
    --epochs 24 --lr 0.05 --lr-milestones 15,20 --batch-size 64 --augment imagenet \
    --rotation-weight 1 \
    --val-every 3 --val-episodes 300 --seed 0 --out runs/mini-r12w32-rot --resume
