#!/bin/sh
# Stage 2 of the photo model (issue 28): the three ablation arms one after the other, each
# resumable (run this again after an interruption). Run from models/ with MGECL set; extra
# arguments go to every arm (e.g. --stop-after 250: the arms' best validation was at episode
# 250 of 500, and the learning rate is constant, so the first 250 episodes are the same).
set -e
for arm in class both inst; do
    runs/mini-r12w32-$arm/cmd.sh "$@" >> runs/mini-r12w32-$arm/train.log 2>&1
done
