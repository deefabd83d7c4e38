"""`studio train` attacked: its data folders and files, its flags and --option values,
the --out folder and what is in it, --resume checkpoints, and `studio plugins new` names.

Every case asserts the exit code (2: the user's input), no traceback, the option or file
named in the message, a time bound, and what was or was not written. Most run in this
process through studio.cli.main (as the console script does); the one that needs a
fresh process (an abort of the tokenizer would kill pytest) runs through test_hostile's
memory-limited runner. Files of gigabytes are sparse: they cost no disk.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.errors import UserError
from test_hostile import cli_main, Case, check_case, midi, png, sparse, wav

GB = 2**30


def studio(capsys, monkeypatch, *args) -> tuple[int, str, float]:
    """(exit code, stdout + stderr, seconds) of `studio ARGS`, run as the console script
    runs it (studio.cli.main: errors become messages and exit codes)."""
    return cli_main(args, monkeypatch, capsys)


def refused(result: tuple[int, str, float], *where: str, within: float = 30.0) -> str:
    """The output of a refusal (exit 2) that names each of `where`, within `within` s (the
    default allows for the first import of torch and transformers on a busy machine)."""
    code, output, seconds = result
    assert code == 2, f"exit {code}\n{output}"
    assert "Traceback" not in output and "internal error" not in output, output
    for phrase in where:
        assert phrase in output, f"{phrase!r} not in:\n{output}"
    assert seconds < within, f"took {seconds:.1f} s\n{output}"
    return output


def deep_folder(root: Path, levels: int) -> Path:
    """root/d/d/.../d, `levels` deep, made a level at a time relative to a file
    descriptor (os.makedirs recurses, and the whole path would pass PATH_MAX)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return root


def remove_deep(root: Path) -> None:
    """Remove what deep_folder made, a level at a time (shutil.rmtree, and so pytest's
    clean-up of old temporary folders, recurses once a level)."""
    while (root / "d").is_dir():
        for extra in (root / "d").iterdir():
            if extra.name != "d":
                extra.unlink()
        if (root / "d" / "d").is_dir():
            os.rename(root / "d" / "d", root / "next")
            os.rmdir(root / "d")
            os.rename(root / "next", root / "d")
        else:
            os.rmdir(root / "d")


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


# --- the abort: a 2 GB file of NUL bytes handed to the tokenizer ----------------------


def test_a_2_gb_file_of_nul_bytes_is_refused_unread_by_text_gpt(tmp_path):
    check_case(Case("train-data", "gpt-2gb-nul", ["train", "text.gpt", "--data", "corpus.txt", "--out", "model",
                                                  "--device", "cpu", "--quiet"],
                    files={"corpus.txt": sparse(2 * GB)}, torch=True, budget_s=40,
                    where=("corpus.txt",), expect=("64 MiB",), writes="any",
                    check=lambda tmp, output, code: _nothing_trained(tmp / "model")), tmp_path)


def _nothing_trained(out: Path) -> None:
    assert not (out / "training" / "checkpoint.safetensors").exists()
    assert not (out / "model.safetensors").exists()


# --- every trainer's data reader --------------------------------------------------------


def text_cases(tmp: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (--data, phrases the message holds), files made under tmp."""
    (tmp / "nul.txt").write_bytes(b"To be, or not to be\n" * 100 + b"\x00" * 10)
    (tmp / "run.txt").write_text("To be, or not to be\n" * 100 + "a" * 5000 + "\n", encoding="utf-8")
    (tmp / "spaces.md").write_text("word " * 100 + " " * 3000, encoding="utf-8")
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 200)
    os.mkfifo(tmp / "fifo.txt")
    (tmp / "empty").mkdir()
    (tmp / "devzero").mkdir()
    (tmp / "devzero" / "zero.txt").symlink_to("/dev/zero")
    (tmp / "big").mkdir()
    for name in ("a.txt", "b.txt"):
        with open(tmp / "big" / name, "wb") as f:
            f.truncate(40 * 2**20)
    (tmp / "huge").mkdir()
    with open(tmp / "huge" / "one.txt", "wb") as f:
        f.truncate(2 * GB)
    return {
        "nul-bytes": ("nul.txt", ("nul.txt", "binary", "line 101")),
        "unsplittable-run": ("run.txt", ("run.txt", "line 101", "run of 5,000 characters")),
        "whitespace-run": ("spaces.md", ("spaces.md", "run of 3,00")),
        "not-utf8": ("latin1.txt", ("latin1.txt", "not UTF-8")),
        "fifo": ("fifo.txt", ("fifo.txt", "not a regular file")),
        "empty-folder": ("empty", ("no text files", "empty")),
        "link-to-dev-zero": ("devzero", ("zero.txt", "not a regular file", "no text files")),
        "over-64-mib-in-all": ("big", ("big", "add up to more than 64.0 MiB")),
        "2-gb-file-in-a-folder": ("huge", ("one.txt", "2.0 GiB", "64.0 MiB each")),
        "empty-name": ("", ("--data",)),
        "missing": ("nothing-here", ("nothing-here", "neither a file nor a folder")),
    }


TEXT_CASES = ["nul-bytes", "unsplittable-run", "whitespace-run", "not-utf8", "fifo", "empty-folder",
              "link-to-dev-zero", "over-64-mib-in-all", "2-gb-file-in-a-folder", "empty-name", "missing"]


@pytest.mark.parametrize("case", TEXT_CASES)
def test_text_gpt_data_is_bounded_and_named(case, tmp_path, capsys, monkeypatch):
    data, where = text_cases(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    refused(studio(capsys, monkeypatch, "train", "text.gpt", "--data", data, "--out", "model", "--device", "cpu",
                   "--quiet"), *where)
    _nothing_trained(tmp_path / "model")


def test_a_folder_1100_levels_deep_is_refused_quickly_by_every_folder_reader(tmp_path, capsys, monkeypatch):
    deep = deep_folder(tmp_path / "deep", 1100)
    (tmp_path / "deep" / "d" / "a.mid").write_bytes(midi())
    try:
        for generator in ("music.transformer", "image.gan", "text.gpt", "audio.vae", "eval.metrics"):
            output = refused(studio(capsys, monkeypatch, "train", generator, "--data", deep, "--out", tmp_path / "m",
                                    "--device", "cpu", "--quiet"), "more than 32 folders deep", within=15)
            assert str(deep) in output, generator
        assert not (tmp_path / "m" / "model.safetensors").exists()
    finally:
        remove_deep(deep)


def test_a_link_to_the_root_folder_is_not_walked(tmp_path, capsys, monkeypatch):
    """Each reader stays inside its data folder: the link to / is left out (said so),
    and the refusal comes at once, not after walking the machine."""
    for name in ("midi", "gan", "text"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "everything").symlink_to("/")
    (tmp_path / "gan" / "cls").symlink_to("/")  # a class folder that is a link out
    (tmp_path / "text" / "notes.txt").write_text("short", encoding="utf-8")
    cases = [("music.transformer", "midi", "no .mid or .midi files"), ("image.gan", "gan", "no images found"),
             ("text.gpt", "text", "too little text")]
    for generator, data, why in cases:
        output = refused(studio(capsys, monkeypatch, "train", generator, "--data", tmp_path / data, "--out",
                                tmp_path / "m", "--device", "cpu", "--quiet"), why, within=8)
        assert "lead outside" in output and "-> /" in output, output


def test_style_cyclegan_domains_must_lie_inside_the_data_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "A").symlink_to("/")
    (tmp_path / "d" / "B").mkdir()
    (tmp_path / "d" / "B" / "x.png").write_bytes(png())
    refused(studio(capsys, monkeypatch, "train", "style.cyclegan", "--data", tmp_path / "d", "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "is a link to /, outside", str(tmp_path / "d"))
    (tmp_path / "d" / "A").unlink()
    (tmp_path / "d" / "A").mkdir()
    refused(studio(capsys, monkeypatch, "train", "style.cyclegan", "--data", tmp_path / "d", "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "no images", str(tmp_path / "d" / "A"))


def test_image_data_that_cannot_be_images_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "a" / "ok.png").write_bytes(png())
    with open(tmp_path / "d" / "b" / "zeros.png", "wb") as f:
        f.truncate(2 * GB)  # sparse: a 2 GB "image" of NUL bytes
    refused(studio(capsys, monkeypatch, "train", "image.gan", "--data", tmp_path / "d", "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "zeros.png", "images are limited to 512.0 MiB each")
    (tmp_path / "d" / "b" / "zeros.png").write_bytes(b"\x00" * 1000)
    refused(studio(capsys, monkeypatch, "train", "image.gan", "--data", tmp_path / "d", "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "zeros.png", "not a readable image")
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_more_images_than_the_training_tensor_holds_are_refused_before_any_is_opened(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    one = png()
    for i in range(700):
        (folder / f"{i:04d}.png").write_bytes(one)
    (folder / "0000.png").write_bytes(b"not a png: never opened")
    refused(studio(capsys, monkeypatch, "train", "image.diffusion", "--data", folder, "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet", "--option", "size=1024", "--option", "channels=3"),
            "700 images at 1024 x 1024", "the limit is 8 GiB")


def test_audio_vae_reads_headers_before_samples(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "ok.wav").write_bytes(wav())
    header = wav(frames=2)
    with open(folder / "long.wav", "wb") as f:  # a header, then 1.2 GB of (sparse) silence: 600 M samples
        f.write(header[:40] + (1200 * 2**20).to_bytes(4, "little"))
        f.truncate(1200 * 2**20 + 44)
    refused(studio(capsys, monkeypatch, "train", "audio.vae", "--data", folder, "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "long.wav", "samples to decode")
    (folder / "long.wav").unlink()
    with open(folder / "zeros.wav", "wb") as f:
        f.truncate(2 * GB)
    refused(studio(capsys, monkeypatch, "train", "audio.vae", "--data", folder, "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), "zeros.wav", "not an audio file")


def test_music_transformer_bounds_the_midi_it_encodes(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(3):
        with open(folder / f"{i}.mid", "wb") as f:
            f.truncate(15 * 2**20)  # 45 MB of sparse "MIDI" in all: over the 32 MiB total
    refused(studio(capsys, monkeypatch, "train", "music.transformer", "--data", folder, "--out", tmp_path / "m",
                   "--device", "cpu", "--quiet"), str(folder), "MIDI files add up to more than 32.0 MiB")


# --- the scan itself ---------------------------------------------------------------------


def test_data_files_is_a_bounded_loop_that_stays_inside(tmp_path, monkeypatch, capsys):
    from studio import limits

    root = tmp_path / "data"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.txt").write_text("x")
    (root / "a" / "loop").symlink_to(root)  # a loop back: walked once
    (root / "inside").symlink_to(root / "a" / "b")  # a link inside: followed, its files found once
    (root / "out").symlink_to(tmp_path)  # a link out: left out
    (tmp_path / "secret.txt").write_text("s")
    assert limits.data_files(root, {".txt"}) == [root / "a" / "b" / "x.txt"]
    assert "lead outside" in capsys.readouterr().err

    monkeypatch.setattr(limits, "MAX_SCAN_ENTRIES", 3)
    with pytest.raises(UserError, match="more than Studio looks through"):
        limits.data_files(root, {".txt"})
    monkeypatch.setattr(limits, "MAX_SCAN_ENTRIES", 1000)
    monkeypatch.setattr(limits, "MAX_SCAN_SECONDS", -1.0)
    with pytest.raises(UserError, match="more than Studio looks through"):
        limits.data_files(root, {".txt"})
    monkeypatch.setattr(limits, "MAX_SCAN_SECONDS", 30.0)
    for i in range(5):
        (root / f"{i}.txt").write_text("x")
    with pytest.raises(UserError, match="more than 3 notes"):
        limits.data_files(root, {".txt"}, max_files=3, what="notes")
    (root / "everything").symlink_to("/")
    start = time.monotonic()
    with pytest.raises(UserError, match="is a link to /, outside"):  # a class folder given directly
        limits.data_files(root / "everything", {".txt"}, inside=root)
    assert time.monotonic() - start < 1


def test_the_longest_run_a_tokenizer_is_given_is_bounded():
    from studio_text.gpt_data import MAX_TEXT_RUN, long_run

    ok = ("word " * 3000, "ab1" * 2000, "a" * MAX_TEXT_RUN, "x " + "1" * MAX_TEXT_RUN + " y")
    assert all(long_run(text) is None for text in ok)
    assert long_run("a" * (MAX_TEXT_RUN + 1)) == (0, MAX_TEXT_RUN + 1)
    assert long_run("hi " + "\t" * 5000) == (2, 5001)
    assert long_run("x." + "-_" * 2000 + ".") == (1, 4002)
    start = time.monotonic()
    assert long_run("the quick brown fox, 1234. " * 1_000_000) is None  # 27 MB in well under a second
    assert time.monotonic() - start < 3


# --- --out: nothing is written through a link that leaves it -----------------------------


def _out_with_link(tmp_path: Path, where: str, *, dangling: bool = False) -> tuple[Path, Path]:
    out, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = out / where
    link.parent.mkdir(parents=True, exist_ok=True)
    if dangling:
        link.symlink_to(elsewhere / "made-there")
    elif where.endswith((".safetensors", ".pt", ".jsonl", ".json", ".md")):
        (elsewhere / "theirs").write_text("keep me")
        link.symlink_to(elsewhere / "theirs")
    else:
        link.symlink_to(elsewhere)
    return out, elsewhere


OUT_LINKS = [("training", False, False), ("training/log.jsonl", False, False),
             ("training/checkpoint.safetensors.tmp", True, True), ("training/optimizer.pt", False, True),
             ("training/samples", False, True), ("training/tokenizer", False, False),
             ("model.safetensors", True, True), ("README.md", False, True)]


@pytest.mark.parametrize("where,dangling,resume", OUT_LINKS)
def test_links_inside_out_that_lead_elsewhere_are_refused(where, dangling, resume, tmp_path, capsys, monkeypatch):
    out, elsewhere = _out_with_link(tmp_path, where, dangling=dangling)
    (tmp_path / "corpus.txt").write_text("To be, or not to be: that is the question.\n" * 200, encoding="utf-8")
    before = snapshot(elsewhere)
    output = refused(studio(capsys, monkeypatch, "train", "text.gpt", "--data", tmp_path / "corpus.txt", "--out", out,
                            "--steps", "2", "--device", "cpu", "--quiet", *(["--resume"] if resume else [])),
                     "outside --out", str(out / where))
    assert str(elsewhere) in output
    assert snapshot(elsewhere) == before
    if (elsewhere / "theirs").exists():
        assert (elsewhere / "theirs").read_text() == "keep me"


@pytest.mark.parametrize("where", ["training/log.jsonl", "training/clips.npy", "training/tokenizer/tokenizer.json"])
def test_a_fifo_where_training_writes_is_refused_not_blocked_on(where, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model"
    (out / where).parent.mkdir(parents=True)
    os.mkfifo(out / where)
    (tmp_path / "corpus.txt").write_text("To be, or not to be: that is the question.\n" * 200, encoding="utf-8")
    refused(studio(capsys, monkeypatch, "train", "text.gpt", "--data", tmp_path / "corpus.txt", "--out", out,
                   "--steps", "2", "--device", "cpu", "--quiet"), str(out / where), "not a regular file")


# --- flags and --option values -------------------------------------------------------------

HUGE = "9" * 5000
FLAGS = [
    (["--steps", HUGE], "--steps"), (["--steps", "0"], "--steps"), (["--steps", "-5"], "--steps"),
    (["--steps", "nan"], "--steps"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "1e9"], "--batch-size"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--lr", "-1e-3"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", HUGE], "--lr"),
    (["--checkpoint-every", "0"], "--checkpoint-every"), (["--checkpoint-every", HUGE], "--checkpoint-every"),
    (["--seed", "-1"], "--seed"), (["--seed", HUGE], "--seed"),
    (["--option", f"block={HUGE}"], "--option block="), (["--option", "block=nan"], "--option block="),
    (["--option", "vocab_size=inf"], "--option vocab_size="), (["--option", "block=-8"], "--option block="),
    (["--option", "block"], "--option 'block'"), (["--option", f"{'k' * 5000}=1"], "--option 'kkk"),
    (["--device", "cuda:x"], "--device"), (["--device", "\x1b[31m" * 1000], "--device"),
]


@pytest.mark.parametrize("flags,where", FLAGS, ids=[f"{f[0]}-{f[1][:12]}" for f, _ in FLAGS])
def test_bad_flags_name_the_option(flags, where, tmp_path, capsys, monkeypatch):
    (tmp_path / "corpus.txt").write_text("text " * 1000, encoding="utf-8")
    output = refused(studio(capsys, monkeypatch, "train", "text.gpt", "--data", tmp_path / "corpus.txt",
                            "--out", tmp_path / "model", "--quiet", *flags), where)
    assert len(output) < 3000, output[:3000]
    assert "\x1b" not in output
    assert not (tmp_path / "model").exists()


CONFIG_CASES = [
    ("steps", 0, "--steps"), ("steps", True, "--steps"), ("steps", 10**5000, "--steps"),
    ("batch_size", -1, "--batch-size"), ("lr", float("nan"), "--lr"), ("lr", float("inf"), "--lr"),
    ("lr", 0.0, "--lr"), ("lr", 10**5000, "--lr"), ("lr", "1e-3", "--lr"), ("seed", 2**64, "--seed"), ("checkpoint_every", 0, "--checkpoint-every"),
    ("data", "", "--data"), ("data", "a\x00b", "--data"), ("device", "cuda:", "--device"),
    ("options", {5: "x"}, "--option"),
]


@pytest.mark.parametrize("field,value,where", CONFIG_CASES, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CONFIG_CASES)])
def test_a_train_config_built_in_python_is_checked_the_same(field, value, where, tmp_path):
    from studio.training import TrainConfig, Trainer, train

    class Never(Trainer):
        generator = "test.never"

        def setup(self):
            raise AssertionError("the config is checked before anything loads")

    config = TrainConfig(data="x", out=tmp_path / "m")
    setattr(config, field, value)
    with pytest.raises(UserError, match=where):
        train(Never, config, show_progress=False)
    assert not (tmp_path / "m").exists()


# --- --resume: checkpoints that are damaged, foreign or huge ---------------------------------


def _tiny(generator: str = "test.tiny", width: int = 4):
    from studio.training import Trainer

    class Tiny(Trainer):
        default_steps = 2
        default_batch_size = 1

        def setup(self):
            import torch

            self.net = torch.nn.Linear(width, width)
            self.modules = {"net": self.net}
            self.optimizers = {"net": torch.optim.Adam(self.net.parameters(), lr=self.lr)}

        def train_step(self, step):
            loss = self.net(torch_ones(width)).pow(2).mean()
            self.optimize(loss, "net")
            return {"loss": float(loss)}

        def export(self, out):
            (out / "weights.txt").write_text("tiny")

    Tiny.generator = generator
    return Tiny


def torch_ones(width: int):
    import torch

    return torch.ones(width)


@pytest.fixture
def checkpointed(tmp_path):
    """OUT holding a finished 2-step run of the tiny trainer."""
    from studio.training import TrainConfig, train

    out = tmp_path / "model"
    train(_tiny(), TrainConfig(data="x", out=out, device="cpu"), show_progress=False)
    return out


def _resume(out: Path, trainer=None, steps: int = 4):
    from studio.training import TrainConfig, train

    return train(trainer or _tiny(), TrainConfig(data="x", out=out, steps=steps, device="cpu", resume=True),
                 show_progress=False)


def _pickled_code(path: Path) -> None:
    class Pwn:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'pwned'}",))

    path.write_bytes(pickle.dumps(Pwn()))


def _step(value):
    def damage(path: Path) -> None:
        import torch

        state = torch.load(path, weights_only=True)
        state["step"] = value
        torch.save(state, path)
    return damage


RESUME_CASES = {
    "garbage-weights": ("checkpoint.safetensors", lambda p: p.write_bytes(b"\x00" * 100), "checkpoint.safetensors"),
    "fifo-weights": ("checkpoint.safetensors", lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    "huge-optimizer-state": ("optimizer.pt", lambda p: open(p, "r+b").truncate(2 * GB), "more than the optimizer"),
    "garbage-optimizer-state": ("optimizer.pt", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "does not fit"),
    "pickled-code": ("optimizer.pt", _pickled_code, "does not fit"),
    "negative-step": ("optimizer.pt", _step(-5), "gives the step as -5"),
    "text-step": ("optimizer.pt", _step("3"), "gives the step as '3'"),
    "huge-step": ("optimizer.pt", _step(10**30), "gives the step as"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_a_damaged_checkpoint_is_refused_by_name(case, checkpointed):
    name, damage, phrase = RESUME_CASES[case]
    damage(checkpointed / "training" / name)
    with pytest.raises(UserError) as caught:
        _resume(checkpointed)
    assert phrase in str(caught.value), caught.value
    assert str(caught.value).startswith(("--resume", "--out")), caught.value  # a FIFO: --out's check finds it
    assert str(checkpointed) in str(caught.value)
    assert not (checkpointed / "training" / "pwned").exists()


def test_a_checkpoint_of_another_generator_or_shape_is_refused_before_loading(checkpointed):
    with pytest.raises(UserError, match="made by the 'test.tiny' trainer, not test.other's"):
        _resume(checkpointed, _tiny("test.other"))
    with pytest.raises(UserError, match=r"tensors differ \(the first, 'net.weight': \[4, 4\], this model: \[8, 8\]"):
        _resume(checkpointed, _tiny(width=8))
    assert _resume(checkpointed).steps == 4  # the right trainer still resumes it


# --- studio plugins new ---------------------------------------------------------------------


def test_plugins_new_takes_a_pip_style_name_and_its_package_passes_its_tests(tmp_path, capsys, monkeypatch):
    code, output, _ = studio(capsys, monkeypatch, "plugins", "new", "acme-grain", "--dir", tmp_path)
    assert code == 0, output
    assert "image.acme_grain" in output
    package = tmp_path / "studio-acme-grain"
    pyproject = (package / "pyproject.toml").read_text()
    assert 'name = "studio-acme-grain"' in pyproject and 'acme_grain = "studio_acme_grain"' in pyproject
    assert 'name = "image.acme_grain"' in (package / "studio_acme_grain" / "__init__.py").read_text()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=package,
                           env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr


@pytest.mark.parametrize("name", ["Acme-Grain", "acme--grain", "-acme", "acme-", "1acme", "acme.grain", "acme grain",
                                  "grain\u00e9", "a" * 41, "acme/../../x", "\x1b[2J"])
def test_plugins_new_refuses_names_that_cannot_be_a_module(name, tmp_path, capsys, monkeypatch):
    output = refused(studio(capsys, monkeypatch, "plugins", "new", "--dir", tmp_path, "--", name),
                     "plugin name", "lower-case letters, digits and _ or - between words", within=3)
    assert "\x1b" not in output
    assert list(tmp_path.iterdir()) == []


# --- what an earlier run left in OUT/training is read back as untrusted input -----------


def test_damaged_saved_clips_are_made_again_not_trusted(tmp_path):
    import numpy as np
    from studio_audio.vae_train import _cached_clips

    cache = tmp_path / "clips.npy"
    assert _cached_clips(cache, 4, 100) is None  # none saved
    np.save(cache, np.zeros((4, 100), np.float32))
    assert _cached_clips(cache, 4, 100).shape == (4, 100)
    for damaged in (b"not numpy", np.lib.format.MAGIC_PREFIX + b"\x01\x00garbage"):
        cache.write_bytes(damaged)
        assert _cached_clips(cache, 4, 100) is None
    np.save(cache, np.array([{"a": 1}], dtype=object))  # a pickle: never loaded
    assert _cached_clips(cache, 4, 100) is None
    np.save(cache, np.zeros((4, 100), np.float64))  # another dtype, or too large for the options
    assert _cached_clips(cache, 4, 100) is None
    np.save(cache, np.zeros((8, 100), np.float32))
    assert _cached_clips(cache, 4, 100) is None
    cache.unlink()
    os.mkfifo(cache)
    assert _cached_clips(cache, 4, 100) is None  # not opened: it would block


def test_a_damaged_saved_tokenizer_is_refused_in_words(tmp_path):
    from studio import UserError
    from studio_text.gpt_train import _saved_tokenizer
    from transformers import AutoTokenizer

    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be loaded.*remove the training folder"):
        _saved_tokenizer(folder, AutoTokenizer)
    (folder / "tokenizer.json").unlink()
    with open(folder / "tokenizer.json", "wb") as f:
        f.truncate(65 * 2**20)  # sparse: refused by its size, never read
    with pytest.raises(UserError, match="at most 64 MB"):
        _saved_tokenizer(folder, AutoTokenizer)
