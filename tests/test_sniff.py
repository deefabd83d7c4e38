"""Input files are what their content says; model paths look like weights or are refused."""

import struct
import zlib
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
from PIL import Image

from studio.pipeline.modelpath import check_model
from studio.sniff import sniff


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _midi(path: Path, notes: list[tuple[int, int]]) -> Path:
    """notes: (delta ticks before note_on, duration ticks) at 480 ticks per beat, 120 bpm."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))
    for delta, length in notes:
        track.append(mido.Message("note_on", note=60, velocity=90, time=delta))
        track.append(mido.Message("note_off", note=60, time=length))
    midi.save(path)
    return path


@pytest.fixture
def files(tmp_path):
    Image.new("RGB", (32, 24), "red").save(tmp_path / "ok.png")
    soundfile.write(tmp_path / "ok.wav", np.zeros(1600, dtype=np.float32), 16000)
    return tmp_path


def test_good_files_are_recognised_with_their_facts(files):
    png = sniff(files / "ok.png")
    assert (png.ok, png.media_type, png.info["width"], png.info["height"]) == (True, "image/png", 32, 24)
    wav = sniff(files / "ok.wav")
    assert (wav.ok, wav.media_type, wav.info["seconds"]) == (True, "audio/wav", 0.1)
    midi = sniff(_midi(files / "tune.mid", [(0, 480), (480, 480)]))
    assert midi.ok and midi.info["notes"] == 2 and midi.info["seconds"] == pytest.approx(1.5)


def test_content_wins_over_the_extension(files):
    (files / "renamed.png").write_bytes((files / "ok.wav").read_bytes())
    assert sniff(files / "renamed.png").media_type == "audio/wav"
    (files / "picture.txt").write_bytes((files / "ok.png").read_bytes())
    assert sniff(files / "picture.txt").media_type == "image/png"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, problem", [
    (lambda d: _write(d / "zero.png", b""), "is empty (0 bytes)"),
    (lambda d: _write(d / "cut.png", (d / "ok.png").read_bytes()[:60]), "is a damaged PNG"),
    (lambda d: _write(d / "cut.wav", (d / "ok.wav").read_bytes()[:1000]), "is truncated"),
    (lambda d: _write(d / "bomb.png", _png_declaring(100_000, 100_000)), "(a decompression bomb?)"),
    (lambda d: _write(d / "wide.png", _png_declaring(20_000, 8_000)), "declares 20,000 x 8,000 pixels"),
    (lambda d: _midi(d / "silent.mid", []), "has no notes"),
    (lambda d: _write(d / "junk.mid", b"MThd\x00\x00\x00\x06garbage"), "is a damaged MIDI file"),
    (lambda d: _write(d / "binary.bin", bytes(range(256))), "is not a file type Studio reads"),
])
def test_unusable_files_say_why(files, make, problem):
    found = sniff(make(files))
    assert not found.ok and problem in found.problem


def test_non_regular_files_are_never_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe")
    assert sniff(tmp_path / "pipe").problem.startswith("is not a regular file")  # returns: no hang
    assert sniff(Path("/dev/zero")).problem.startswith("is not a regular file")
    assert sniff(tmp_path).problem.startswith("is not a regular file")


def test_a_far_note_is_measured_without_building_a_per_tick_table(tmp_path):
    found = sniff(_midi(tmp_path / "far.mid", [(100_000 * 2 * 480, 480)]))
    assert found.ok and found.info["seconds"] == pytest.approx(100_000.5)


WANTS = {"files": ["model_index.json", "unet/config.json"], "suffixes": [], "hub": True}


def test_model_paths_resolve_against_the_pipeline_folder(tmp_path, monkeypatch):
    model = tmp_path / "models" / "diff"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text("{}")
    monkeypatch.chdir("/")
    assert check_model("models/diff", WANTS, tmp_path) == (str(model), None)
    assert check_model("default", WANTS, tmp_path) == ("default", None)


@pytest.mark.parametrize("value, problem", [
    ("/", "names /, a system directory"),
    ("/usr", "names /usr, a system directory"),
    ("nowhere", "not found (looked in"),
    ("org/missing-model", "nor in the Hugging Face cache"),
    ("empty-dir", "is a directory without model_index.json or unet/config.json"),
    ("weights.bin", "is a file this generator does not load"),
    ("", "is empty"),
])
def test_model_paths_that_are_not_models_are_refused(tmp_path, monkeypatch, value, problem):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    _, found = check_model(value, WANTS, tmp_path)
    assert found is not None and problem in found


def test_a_hub_id_in_the_local_cache_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "models--org--tiny").mkdir()
    assert check_model("org/tiny", WANTS, tmp_path / "pipelines") == ("org/tiny", None)
