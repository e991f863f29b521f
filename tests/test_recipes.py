"""Recipes: the registry, validation, immutability."""

import dataclasses
import json

import pytest

from n2ngraph.recipes import GRANULARITIES, RECIPES, SCOPES, Recipe, get_recipe, resolve_recipe


def test_registry_holds_the_paper_and_all_pairs_recipes():
    paper, allp = RECIPES["paper"], RECIPES["all-pairs"]
    assert (paper.wiring, paper.skip_kernel, paper.skip_order, paper.granularity, paper.scope,
            paper.n2nskip_fraction) == ("blocks", "same", "conv-bn-act-pool", "channel", "global", 0.5)
    assert paper.dense_layers == ("stem", "classifier")
    assert (allp.wiring, allp.skip_kernel, allp.skip_order, allp.granularity, allp.dense_layers,
            allp.scope, allp.n2nskip_fraction) == ("all-pairs", 1, "pool-conv-act", "weight", (),
                                                   "layerwise", 0.5)
    assert all(r.name == name for name, r in RECIPES.items())


def test_get_recipe_by_name_or_object_and_unknown_names():
    assert get_recipe("paper") is RECIPES["paper"]
    custom = dataclasses.replace(RECIPES["paper"], n2nskip_fraction=0.25, name="paper-f0.25")
    assert get_recipe(custom) is custom
    with pytest.raises(ValueError, match=r"unknown recipe 'papr'.*\['all-pairs', 'paper'\]"):
        get_recipe("papr")
    with pytest.raises(TypeError):
        get_recipe(3)


def test_recipes_are_frozen_and_serialise():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES["paper"].wiring = "all-pairs"
    data = RECIPES["paper"].to_json()
    assert json.loads(json.dumps(data)) == data and data["dense_layers"] == ["stem", "classifier"]
    assert Recipe(**{**data, "dense_layers": tuple(data["dense_layers"])}) == RECIPES["paper"]


@pytest.mark.parametrize("field, bad", [
    ("wiring", "stages"), ("wiring", 1), ("wiring", True), ("skip_kernel", 2), ("skip_kernel", "big"),
    ("skip_order", "act-conv"), ("granularity", "kernel"), ("dense_layers", ("stem", "head")),
    ("dense_layers", "stem"), ("scope", "blockwise"), ("n2nskip_fraction", 1.0),
    ("n2nskip_fraction", 0.0), ("name", ""), ("skip_downsample", "interpolate"),
])
def test_bad_fields_are_refused(field, bad):
    with pytest.raises(ValueError, match=field if field != "name" else "name"):
        dataclasses.replace(RECIPES["paper"], **{field: bad})


def test_integer_wiring_and_kernel():
    r = dataclasses.replace(RECIPES["all-pairs"], wiring=3, skip_kernel=3, name="span3")
    assert r.wiring == 3 and r.skip_kernel == 3 and r.to_json()["wiring"] == 3


def test_resolve_recipe_derives_and_names_once():
    assert resolve_recipe("paper") is RECIPES["paper"]
    assert resolve_recipe("paper", n2nskip_fraction=0.5, scope="global") is RECIPES["paper"]
    r = resolve_recipe("paper", n2nskip_fraction=0.25, scope="layerwise")
    assert (r.name, r.n2nskip_fraction, r.scope) == ("paper-f0.25-layerwise", 0.25, "layerwise")
    assert dataclasses.replace(r, name="x", n2nskip_fraction=0.5, scope="global") == \
        dataclasses.replace(RECIPES["paper"], name="x")
    with pytest.raises(ValueError, match="n2nskip_fraction"):
        resolve_recipe("paper", n2nskip_fraction=1.0)
    with pytest.raises(ValueError, match="unknown scope 'sideways'"):
        resolve_recipe("paper", scope="sideways")


def test_mask_vocabularies_agree_with_pruning():
    from n2ngraph import pruning

    assert set(SCOPES) == set(pruning.SCOPES) and set(GRANULARITIES) == set(pruning.GRANULARITIES)
