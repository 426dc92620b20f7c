#!/bin/sh
# Stage 1 of the photo model: ResNet-12 32-80-160-320 at 84x84, cross-entropy on the 64 train
# classes. Run from models/ ; MGECL points at the mgecl binary. Resumable: run again.
D=../../shared/data/miniimagenet
exec ${MGECL:-mgecl} pretrain --data $D/images \
    --include $D/splits/train_classes.txt --val-include $D/splits/val_classes.txt \
    --arch resnet12 --widths 32,80,160,320 --channels 3 --image-size 84 \
    --epochs 24 --lr 0.05 --lr-milestones 15,20 --batch-size 64 --augment imagenet \
    --val-every 3 --val-episodes 300 --seed 0 --out runs/mini-r12w32 --resume
