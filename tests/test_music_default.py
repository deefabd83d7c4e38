"""The embedded music default: small, documented, writes music in a key."""

import json
from pathlib import Path

import pretty_midi

from studio.testing import run_yaml
from model_cards.music_transformer import key_fit

WEIGHTS = Path(__file__).resolve().parent.parent / "plugins" / "studio_music" / "weights" / "transformer"


def test_default_is_small_safetensors_with_a_model_card():
    files = [p for p in WEIGHTS.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 2**20
    assert (WEIGHTS / "model.safetensors").is_file()
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Command", "## Training", "## Quality", "studio train music.transformer"):
        assert section in card


def test_default_writes_tonal_music_of_the_asked_length(tmp_path):
    text = json.dumps({"name": "m", "device": "cpu", "steps": [
        {"id": "m", "uses": "music.transformer", "with": {"duration_s": 8, "seed": 3}}]})
    result = run_yaml(text, tmp_path)
    assert result.status == "done", result.failed
    midi = pretty_midi.PrettyMIDI(str(result.artifacts()[0].path))
    notes = midi.instruments[0].notes
    assert 7.0 <= midi.get_end_time() <= 9.5
    assert len(notes) > 20
    assert key_fit([n.pitch for n in notes]) >= 0.75  # uniformly random pitches score about 0.6
