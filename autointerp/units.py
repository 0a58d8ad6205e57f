from .core.units import UNIT_IN_TEXT_RE, UNIT_RE, Unit  # noqa: F401  -- moved to autointerp.core.units; this shim keeps old imports working
