"""The embedded weights other plugins ship, used by eval as its default reference models
(text.gpt's language model for perplexity, audio.vae's autoencoder for the latent
Fréchet distance). Weights are package data: their folder is found from where the
package is installed, without importing its code, so eval depends on the files and not
on the other plugin's modules (the loaders are in the support packages studio_lm and
studio_diffusers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from studio import UserError

# 'default' for each reference model: (package, folder under its weights/, the generator it belongs to)
TEXT_LM = ("studio_text", "gpt", "text.gpt")
AUDIO_VAE = ("studio_audio", "vae", "audio.vae")


def default_weights(model: str, which: tuple[str, str, str]) -> Path:
    """The folder 'default' names for a reference model `which` (one of the above):
    PACKAGE/weights/FOLDER of the installed package. Only 'default' needs that package;
    for any other model the folder is never read."""
    package, folder, generator = which
    spec = importlib.util.find_spec(package)
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if places:
        return Path(places[0]) / "weights" / folder
    if model == "default":
        raise UserError(f"'default' is {generator}'s embedded model, and its package {package} is not installed; "
                        "name a model directory instead")
    return Path(package, "weights", folder)
