#!/usr/bin/env bash
# Remake the embedded default source model (lensgen/assets/source_model/) offline:
# synthetic GREAT3-format data -> train-vae -> fit-iaf -> copy the files that
# load_source_model needs. Run from the repository root; work files go to runs/.
#
# The data: 48 × 48 stamps of 0.1″ through a 0.25–0.3″ space-like PSF, two subfields
# (a leak-free validation set needs a subfield of its own), each the coadd of 6 epochs.
# The shipped model was trained on the one-subfield, one-epoch predecessor of this
# recipe (same galaxies, pixel scale, PSF range and noise; written before the
# generator followed GREAT3's multi-epoch layout), so a rerun gives an equivalent
# model, not the same weights.
set -euo pipefail
mkdir -p runs
lensgen download-great3 --synthetic -b multiepoch-space-constant --synthetic-grid 100 \
  --max-images 2 --n-stamps 5000 --seed 0 --cache-dir runs/g3cache \
  -o runs/space_data.fits --overwrite
lensgen train-vae examples/default_model.toml -o runs/default_model --overwrite
lensgen fit-iaf runs/default_model --seed 0 --overwrite
dest=lensgen/assets/source_model
mkdir -p "$dest"
cp runs/default_model/{model.json,weights.npz,flow.json,flow.npz,config.toml,flow_report.json} "$dest/"
