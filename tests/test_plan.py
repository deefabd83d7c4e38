from studio.pipeline.plan import Binding, build_plan, derive_seed
from studio.pipeline.validate import load_spec


def plan_of(host, write_yaml, text):
    return build_plan(load_spec(write_yaml(text), host.registry), host.registry)


def test_sweep_is_a_product_and_zip_is_parallel(host, write_yaml):
    plan = plan_of(host, write_yaml, """
        name: x
        seed: 5
        steps:
          - id: cover
            uses: fake.image
            sweep: {seed: [1, 2, 3], size: [4, 8]}
          - id: pair
            uses: fake.text
            zip: {prompt: [a, b], seed: [5, 6]}
    """)
    cover, pair = plan.steps
    assert [i.name for i in cover.items] == [
        "cover@seed=1,size=4", "cover@seed=1,size=8", "cover@seed=2,size=4",
        "cover@seed=2,size=8", "cover@seed=3,size=4", "cover@seed=3,size=8",
    ]
    assert [i.seed for i in cover.items] == [1, 1, 2, 2, 3, 3]
    assert [(i.name, i.seed) for i in pair.items] == [("pair@prompt=a,seed=5", 5), ("pair@prompt=b,seed=6", 6)]


def test_derived_seeds_are_stable_and_distinct(host, write_yaml):
    plan = plan_of(host, write_yaml, """
        name: x
        seed: 1234
        steps:
          - {id: a, uses: fake.image, sweep: {size: [1, 2, 3]}}
    """)
    seeds = [i.seed for i in plan.items]
    assert seeds == [derive_seed(1234, "a", n) for n in range(3)]
    assert len(set(seeds)) == 3 and all(i.seed_derived for i in plan.items)
    assert derive_seed(1234, "a", 0) == 3306369495  # pinned: the same on every machine
    assert derive_seed(1235, "a", 0) != derive_seed(1234, "a", 0)


def test_scalar_reference_maps_and_list_reference_gathers(host, write_yaml):
    plan = plan_of(host, write_yaml, """
        name: x
        steps:
          - id: sheet
            uses: image.grid
            with: {images: "${steps.cap.outputs.image}"}
          - {id: words, uses: fake.text, sweep: {prompt: [red, blue]}}
          - id: cap
            uses: fake.image
            with: {prompt: "a ${steps.words.outputs.text} square"}
            sweep: {seed: [1, 2]}
    """)
    assert [s.id for s in plan.steps] == ["words", "cap", "sheet"]  # data order, not YAML order
    cap = plan.steps[1]
    assert [i.name for i in cap.items] == [
        "cap@prompt=red,seed=1", "cap@prompt=red,seed=2", "cap@prompt=blue,seed=1", "cap@prompt=blue,seed=2",
    ]
    assert cap.items[2].deps == ("words@prompt=blue",)
    binding = cap.items[2].params["prompt"]
    assert isinstance(binding, Binding) and binding.mode == "interpolate"
    (sheet,) = plan.steps[2].items
    assert sheet.name == "sheet" and len(sheet.deps) == 4
    assert sheet.params["images"].mode == "list"


def test_item_directories_are_safe(host, write_yaml):
    plan = plan_of(host, write_yaml, """
        name: x
        steps:
          - {id: a, uses: fake.text, sweep: {prompt: ["a red fox / in snow", "b"]}}
          - {id: b, uses: fake.text, sweep: {prompt: ["x/y", "x y"]}}
          - {id: c, uses: fake.text, sweep: {prompt: ["%s", "c"]}}
    """ % ("long " * 30))
    a, b, c = plan.steps
    assert [i.dirname for i in a.items] == ["a@prompt=a_red_fox_in_snow", "a@prompt=b"]
    assert [i.dirname for i in b.items] == ["b@item-0000", "b@item-0001"]  # both would be x_y
    assert c.items[0].dirname == "c@prompt=long_long_long_long_long_long_long_lo..."
    assert all("/" not in i.dirname for i in plan.items)
