"""The viewer's circuit page: a stored edge-level circuit (`autointerp circuit`): its
faithfulness-vs-edges curve and its edges, head nodes linked to their unit pages. Everything
from the store is escaped."""

from __future__ import annotations

from ..core.units import Unit
from .pages import dataset_url, esc, fnum, layout, table, unit_url


def _node(name: str, model: str) -> str:
    base, sep, ch = name.partition(":")
    if Unit.is_id(base):
        return f'<a href="{esc(unit_url(model, base))}">{esc(base)}</a>' + (f":{esc(ch)}" if sep else "")
    return esc(name)


def circuit_page(row: dict) -> str:
    model = row["model_id"]
    edges = [e for e in row["edges"] if e["in_circuit"]]
    head = (f'<p class="muted">circuit {esc(row["id"])} · {esc(row["method"])} · dataset '
            f'<a href="{esc(dataset_url(row["dataset"]))}">{esc(row["dataset"])}</a> · model {esc(model)} · '
            f'{esc(row["n_items"])} items</p>')
    fa = row.get("faithfulness")
    summary = (f"<p>{len(edges)} of {esc(row['n_edges_total'])} edges; faithfulness "
               f"<b>{'-' if fa is None else esc(f'{fa:.3f}')}</b>"
               + (f" (target {esc(row['target'])})" if row.get("target") else "")
               + f"; logit diff clean {fnum(row['clean_logit_diff'], '.3f')}, corrupt "
                 f"{fnum(row['corrupt_logit_diff'], '.3f')}</p>")
    curve = table(["edges kept", "faithfulness"], [[esc(k), fnum(f, ".3f")] for k, f in row.get("curve", [])])
    rows = [[esc(e["rank"]), _node(e["sender"], model), _node(e["receiver"], model), fnum(e["score"], "+.4f")]
            for e in edges]
    body = (head + f"<h1>circuit: {esc(row['dataset'])}</h1>" + summary + "<h2>faithfulness vs edges</h2>" + curve
            + "<h2>edges</h2>" + table(["rank", "sender", "receiver", "score"], rows))
    return layout(f"circuit {row['id']}", body)
