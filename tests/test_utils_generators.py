"""The built-in utility generators, called directly and in pipelines."""

import pytest
from PIL import Image

from studio.generator import Artifact
from studio.testing import assert_generator_contract, make_host, run_yaml
from studio_utils.grid import ImageGrid
from studio_utils.resize import ImageResize
from studio_utils.template import TextTemplate
from studio_utils.title import ImageTitle


def test_every_installed_generator_keeps_the_contract():
    host = make_host()
    assert len(host.registry.generators) >= 4
    for gen in host.registry.generators.values():
        assert_generator_contract(gen)


def artifact(path, labels=None):
    from studio.execute.artifacts import sha256_file

    return Artifact(path=path, media_type="image/png", sha256=sha256_file(path), size=path.stat().st_size,
                    labels=labels or {})


def test_template_vars_and_escapes(studio_context):
    gen = TextTemplate()
    out = gen.generate(TextTemplate.Params(template="  A {mood} sea  ", vars={"mood": "calm"}), studio_context())
    assert out == {"text": "A calm sea"}
    escaped = gen.generate(TextTemplate.Params(template="{{x}} {mood}", vars={"mood": "m"}), studio_context())
    assert escaped == {"text": "{x} m"}
    plain = gen.generate(TextTemplate.Params(template="{no vars, no placeholders}"), studio_context())
    assert plain == {"text": "{no vars, no placeholders}"}
    with pytest.raises(ValueError, match=r"placeholders \['mood'\] have no value in `vars`"):
        gen.generate(TextTemplate.Params(template="A {mood} sea", vars={"sky": "x"}), studio_context())


def test_template_composes_upstream_text(tmp_path):
    result = run_yaml("""
        name: t
        steps:
          - {id: who, uses: fake.text, with: {prompt: "the keeper"}}
          - id: line
            uses: text.template
            with: {template: "A poem about ${steps.who.outputs.text}, costs $${price}"}
    """, tmp_path)
    assert result.items["line"].artifacts["text"].read_text() == "A poem about the keeper, costs ${price}"


@pytest.mark.parametrize("mode,size", [("stretch", (30, 10)), ("fit", (30, 10)), ("fill", (30, 10))])
def test_resize_modes(mode, size, tmp_path, studio_context):
    src = tmp_path / "in.png"
    Image.new("RGB", (20, 20), "red").save(src)
    out = ImageResize().generate(ImageResize.Params(image=artifact(src), width=30, height=10, mode=mode),
                                 studio_context())["image"]
    assert out.size == size
    if mode == "fit":  # letterboxed: red square in the middle, black bars at the sides
        assert out.getpixel((15, 5)) == (255, 0, 0) and out.getpixel((1, 5)) == (0, 0, 0)
    else:
        assert out.getpixel((1, 5)) == (255, 0, 0)


def test_resize_keeps_aspect_ratio_and_needs_a_size(tmp_path, studio_context):
    src = tmp_path / "in.png"
    Image.new("RGBA", (40, 20)).save(src)
    out = ImageResize().generate(ImageResize.Params(image=artifact(src), width=10), studio_context())["image"]
    assert out.size == (10, 5) and out.mode == "RGBA"
    with pytest.raises(ValueError, match="give width, height or both"):
        ImageResize.Params(image=artifact(src))


def test_grid_lays_two_swept_parameters_out_as_xy(tmp_path, studio_context):
    arts = []
    for seed in (1, 2, 3):
        for scale in (3, 7):
            p = tmp_path / f"{seed}-{scale}.png"
            Image.new("RGB", (16, 16), (seed * 60, scale * 30, 0)).save(p)
            arts.append(artifact(p, {"seed": seed, "guidance_scale": scale}))
    params = ImageGrid.Params(images=arts, cell_size=16, padding=2, labels=False)
    sheet = ImageGrid().generate(params, studio_context())["image"]
    assert sheet.size == (2 + 2 * 18, 2 + 3 * 18)  # 2 columns (scale) x 3 rows (seed)
    assert sheet.getpixel((2 + 18 + 8, 2 + 2 * 18 + 8)) == (180, 210, 0)  # row seed=3, column scale=7
    labelled = ImageGrid().generate(ImageGrid.Params(images=arts, cell_size=16), studio_context())["image"]
    assert labelled.width > sheet.width and labelled.height > sheet.height  # room for the axis labels


def test_grid_labels_with_line_breaks_are_drawn_on_one_line(tmp_path, studio_context):
    arts = []
    for speaker in ("HAMLET.\n", "KING.\n\n"):
        for seed in (1, 2):
            p = tmp_path / f"{speaker.strip()}-{seed}.png"
            Image.new("RGB", (16, 16), "white").save(p)
            arts.append(artifact(p, {"template": speaker, "seed": seed}))
    sheet = ImageGrid().generate(ImageGrid.Params(images=arts, cell_size=16), studio_context())["image"]
    assert sheet.width > 2 * 16 and sheet.height > 2 * 16


def test_grid_of_unlabelled_images_is_square(tmp_path, studio_context):
    p = tmp_path / "a.png"
    Image.new("RGB", (8, 8), "blue").save(p)
    params = ImageGrid.Params(images=[artifact(p)] * 5, cell_size=16, padding=0)
    assert ImageGrid().generate(params, studio_context())["image"].size == (48, 32)  # 3 x 2


def test_title_card_colour_follows_the_seed(studio_context):
    gen = ImageTitle()

    def card(seed):
        return gen.generate(ImageTitle.Params(text="Hello", width=64, height=32, seed=seed), studio_context(seed))["image"]

    assert card(1).getpixel((1, 1)) == card(1).getpixel((1, 1))
    assert card(1).getpixel((1, 1)) != card(2).getpixel((1, 1))
    image = card(1)
    colours = {image.getpixel((x, y)) for x in range(64) for y in range(32)}
    assert len(colours) > 2  # the text is drawn, anti-aliased
