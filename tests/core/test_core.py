"""The neutral core: hook names, unit ids, content keys."""

import re

import numpy as np
import pytest

from autointerp.core import hooks as H
from autointerp.core.hooks import HookNameError, act_name, hook_names, is_hook, parse_hook
from autointerp.core.keys import content_hash, pack_f16, pack_i32, unpack_f16, unpack_i32
from autointerp.core.units import UNIT_IN_TEXT_RE, UNIT_RE, Unit
from autointerp.errors import HookError, UnitError, UsageError


@pytest.mark.parametrize("site,layer,name", [
    ("mlp.post", 3, "blocks.3.mlp.post"), ("attn.z", 3, "blocks.3.attn.z"), ("resid_post", 3, "blocks.3.resid_post"),
    ("attn.pattern", 0, "blocks.0.attn.pattern"), ("resid_post.sae.latents", 6, "blocks.6.resid_post.sae.latents"),
    ("ln_final.out", None, "ln_final.out"),
])
def test_act_name_round_trips(site, layer, name):
    assert act_name(site, layer) == name
    assert parse_hook(name) == (layer, site)
    assert act_name(name) == name  # a full name is validated and returned


@pytest.mark.parametrize("bad", ["blocks.3.attn.x", "blocks.x.attn.z", "blocks.03.attn.z", "ln_final", "attn.z",
                                 "blocks.3", "blocks.3.resid_post.sae.bogus", "hook_bogus"])
def test_parse_hook_rejects_listing_valid_sites(bad):
    with pytest.raises(ValueError) as e:
        parse_hook(bad)
    assert "attn.z" in str(e.value) and "ln_final.out" in str(e.value)
    assert not is_hook(bad)


def test_act_name_errors_are_value_and_usage_errors():
    with pytest.raises(HookNameError) as e:
        act_name("attn.zz", 2)
    assert isinstance(e.value, ValueError) and isinstance(e.value, HookError) and isinstance(e.value, UsageError)
    assert "mlp.post" in str(e.value)
    with pytest.raises(ValueError, match="needs a layer"):
        act_name("attn.z")
    with pytest.raises(ValueError, match="takes no layer"):
        act_name("ln_final.out", 2)
    with pytest.raises(ValueError, match="int >= 0"):
        act_name("attn.z", -1)
    with pytest.raises(ValueError, match="not layer 4"):
        act_name("blocks.3.attn.z", 4)


def test_hook_names_forward_order():
    names = hook_names(2)
    assert names[0] == "blocks.0.resid_pre" and names[-1] == "ln_final.out"
    assert len(names) == 2 * len(H.LAYER_SITES) + 1
    assert hook_names(4, layers=[1], sites=["attn.z"]) == ["blocks.1.attn.z"]
    assert H.site_order("resid_post.sae.latents") == H.site_order("resid_post")
    assert H.is_head_site("blocks.1.attn.q") and not H.is_head_site("blocks.1.attn.pattern")


def test_unit_format_and_parse():
    u = Unit.neuron(5, 131)
    assert u.id == str(u) == "L5/N131" and u.letter == "N"
    assert Unit.parse(" l9/h9 ") == Unit.head(9, 9)
    assert Unit.head(9, 9).hook == "blocks.9.attn.z" and u.hook == "blocks.5.mlp.post"
    assert Unit.is_id("L9/H9") and not Unit.is_id("l9/h9") and not Unit.is_id("L9/H9x") and not Unit.is_id(None)
    assert [x.id for x in Unit.find_all("heads L9/H9 and L3/N42, not XL1/H2")] == ["L9/H9", "L3/N42"]
    assert UNIT_RE.match("L1/H2").groups()[:3] == ("1", "H", "2")
    assert UNIT_IN_TEXT_RE.search("see L1/N2.").group() == "L1/N2"
    m = re.match(r"L\s?(\d+)\s?/\s?([hn])(\d+)", "L 4/ h7")
    assert Unit.from_match(m).id == "L4/H7"
    with pytest.raises(UnitError, match="bad unit id"):
        Unit.parse("L1/X2")
    with pytest.raises(UnitError, match="bad unit kind"):
        Unit(1, "feature", 2)   # the word is "latent"
    with pytest.raises(UnitError, match="out of range"):
        Unit.head(2, 0).check(2, 10, 4)


def test_keys_and_packing():
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash(1, 2) != content_hash(2, 1) and len(content_hash("x")) == 24
    np.testing.assert_allclose(unpack_f16(pack_f16([0.5, -2.0])), [0.5, -2.0])
    assert unpack_i32(pack_i32([1, -7])).tolist() == [1, -7]


def test_old_import_paths_are_the_core_objects():
    from autointerp.store import base

    assert base.content_hash is content_hash and base.unpack_f16 is unpack_f16


def test_latent_units_name_their_sae_and_round_trip():
    f = Unit.latent(6, 1234, "res6k")
    assert f.id == "L6/F1234@res6k" and Unit.parse(f.id) == f and Unit.is_id(f.id)
    assert Unit.parse("l6/f1234@res6k") == f                     # the SAE name keeps its case
    assert Unit.parse("L6/F1234@Res6k") != f
    assert Unit.parse("L6/F12").with_sae("x") == Unit.latent(6, 12, "x")
    with pytest.raises(UnitError, match="names SAE"):
        f.with_sae("other")
    with pytest.raises(UnitError, match="not an SAE latent"):
        Unit.neuron(1, 2).with_sae("x")
    with pytest.raises(UnitError, match="only latents"):
        Unit(1, "neuron", 2, "x")
    assert [u.id for u in Unit.find_all("see L6/F12@res6k. and L5/N3")] == ["L6/F12@res6k", "L5/N3"]
    with pytest.raises(UnitError, match="out of range"):
        f.check(8, 10, 4, n_latents=1000)
    with pytest.raises(UnitError, match="give the SAE"):
        f.check(8, 10, 4)
    assert H.sae_hook("blocks.6.resid_post") == "blocks.6.resid_post.sae.latents"
    assert H.parse_hook("blocks.6.mlp.in.sae.recons") == (6, "mlp.in.sae.recons")
