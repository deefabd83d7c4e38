"""The measurements behind the model cards (plugins/*/weights/*/MODEL_CARD.md): one
script per embedded model, run from the repository root as the cards say, e.g.
`python -m model_cards.image_diffusion --model DIR`. They train judges, sample and
write reports, so they live here, outside the plugin packages that load at run time;
the tests import their measures as `model_cards.<name>` (pytest's pythonpath)."""
