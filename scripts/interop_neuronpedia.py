"""Check an `autointerp export --format neuronpedia` folder with the `neuronpedia` package itself
(PyPI, 1.2.x; run with a Python that has it, e.g. a separate venv):

    .peers/neuronpedia/bin/python scripts/interop_neuronpedia.py EXPORT_DIR

Every batch is read into the package's own dataclasses (Feature, Explanation, Activation with its
quantile checks, Logit) and handed to Source.upload_batch, whose request is captured instead of
sent (no network, no API key): the payload neuronpedia would POST must equal the file. Prints one
JSON object; exit code 1 on any difference."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def check(folder: Path) -> dict:
    from neuronpedia.np_activation import Activation
    from neuronpedia.np_explanation import Explanation
    from neuronpedia.np_feature import Feature, Logit
    from neuronpedia.np_source import Source
    from neuronpedia.requests.feature_request import FeatureRequest

    sent: list[dict] = []

    def capture(self, method, uri, json=None, **kw):
        sent.append({"method": method, "uri": uri, "json": json, "api": self.BASE_URL})
        return {"ok": True}

    FeatureRequest.send_request = capture            # the one network call, captured
    FeatureRequest.__init__ = lambda self, api_key=None: None
    manifest = json.loads((folder / "manifest.json").read_text())
    from importlib.metadata import version

    out = {"neuronpedia": version("neuronpedia"), "batches": 0, "features": 0, "activations": 0,
           "explanations": 0, "mismatches": []}
    for b in manifest["batches"]:
        payload = json.loads((folder / b["file"]).read_text())
        m, src = payload["modelId"], payload["source"]
        feats = []
        for f in payload["features"]:
            i = f["index"]
            feats.append(Feature(
                modelId=m, source=src, index=i, density=f["density"],
                top_logits=[Logit(x["token"], x["value"]) for x in f["topLogits"]] if f["topLogits"] is not None else None,
                bottom_logits=[Logit(x["token"], x["value"]) for x in f["bottomLogits"]]
                if f["bottomLogits"] is not None else None,
                explanations=[Explanation(modelId=m, source=src, index=i, text=e["text"], method=e["methodName"],
                                          explainer_model=e["modelName"]) for e in f["explanations"]],
                activations=[Activation(modelId=m, source=src, index=i, tokens=a["tokens"], values=a["values"],
                                        quantileMax=a["quantileMax"], quantileMin=a["quantileMin"],
                                        quantileFraction=a["quantileFraction"]) for a in f["activations"]]))
            if any(len(a["tokens"]) != len(a["values"]) for a in f["activations"]):
                out["mismatches"].append(f"{b['file']} feature {i}: tokens and values differ in length")
        Source(id=src, model_id=m, set_name=src.split("-", 1)[1]).upload_batch(feats)
        got = sent[-1]
        if got["uri"] != "upload-batch" or got["json"] != payload:
            out["mismatches"].append(f"{b['file']}: the payload neuronpedia would send differs from the file")
        out["batches"] += 1
        out["features"] += len(feats)
        out["activations"] += sum(len(f.activations or []) for f in feats)
        out["explanations"] += sum(len(f.explanations or []) for f in feats)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    res = check(Path(sys.argv[1]))
    print(json.dumps(res, indent=1))
    sys.exit(1 if res["mismatches"] else 0)
