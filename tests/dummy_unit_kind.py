"""A unit kind added in this one module (issue 22): one dimension of the residual stream after
a layer, L1/R7 = the 8th value of blocks.1.resid_post. Registering it is all it takes for unit
ids, size checks, hooks, batch planning and explain's scorer selection to know it."""

from autointerp.core.units import UnitKind, register_unit_kind

RESID = register_unit_kind(UnitKind("resid", "R", "resids", "resid_post", "d_model", example="L1/R7",
                                    intervene=False, noun="residual dimension"))
