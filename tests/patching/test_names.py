"""Component and receiver names go through core (Unit, act_name)."""

import numpy as np
import pytest

from autointerp.errors import UsageError
from autointerp.patching import PatchResult, component_named, components_for, components_named
from autointerp.patching.path import parse_receivers
from autointerp.patching.plot import result_grid


def test_component_named_matches_components_for(tiny_gpt2):
    hm = tiny_gpt2
    heads = components_for(hm, "heads", 0, per_position=False)
    mlps = components_for(hm, "mlp", 0, per_position=False)
    assert components_named([c.name for c in heads + mlps]) == heads + mlps
    n = component_named("L1/N7")
    assert (n.hook, n.layer, n.neuron, n.head) == ("blocks.1.mlp.post", 1, 7, None)
    with pytest.raises(UsageError, match="per-layer hook name"):
        component_named("ln_final.out")
    assert component_named("blocks.1.hook_mlp_out") == mlps[1]          # TransformerLens' spelling, same component


def test_parse_receivers(tiny_gpt2):
    hm = tiny_gpt2
    assert parse_receivers(hm, "logits") is None
    assert parse_receivers(hm, "L1/H2:k, l2/h0") == [(1, 2, "k"), (2, 0, "q")]
    for bad in ("L1/N2", "L1/H2:x", "blocks.1.attn.z", "L1/H2:q:q"):
        with pytest.raises(UsageError, match="bad receiver"):
            parse_receivers(hm, bad)
    with pytest.raises(UsageError, match="layer-0 head"):
        parse_receivers(hm, "L0/H1")


def test_result_grid_reads_unit_ids():
    rows = [{"component": "L1/H2", "layer": 1, "position": None, "effect": 0.5},
            {"component": "L0/H0", "layer": 0, "position": None, "effect": -0.25}]
    res = PatchResult(what="heads", method="activation", clean_logit_diff=1, corrupt_logit_diff=0, n_items=1,
                      results=rows)
    g, ylab, xlab, yname, xname = result_grid(res, 2, 3)
    assert (yname, xname) == ("layer", "head") and g[1, 2] == 0.5 and g[0, 0] == -0.25 and np.isnan(g[0, 1])
    rows = [{"component": "L2/N3", "layer": 2, "position": None, "effect": 1.0}]
    res = res.model_copy(update={"results": rows})
    g, ylab, xlab, yname, xname = result_grid(res, 3, 3)
    assert xname == "neuron" and g.shape == (1, 4) and g[0, 3] == 1.0
    rows = [{"component": "L1/H2", "layer": 1, "position": 1, "effect": 0.1}]
    g, ylab, *_ = result_grid(res.model_copy(update={"results": rows}), 2, 3)
    assert ylab == ["L1/H2"] and g.shape == (1, 2)
