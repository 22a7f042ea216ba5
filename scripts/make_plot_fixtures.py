#!/usr/bin/env python3
"""scripts/make_plot_fixtures.py: the figure tests' fixtures (tests/fixtures/plots) from real reports.

  compare_demo.json: `hamu compare --json` of the README demo (fashion-mnist, class=0, seven methods),
                     copied as is.
  hardness_demo.json: `hamu hardness --json` of a 1-epoch mlp on fashion-mnist class=0, trimmed to
                     every 6th sample (plus the heat map's rows) and the fields the figure reads, so the
                     fixture stays small; class_names added when the report predates them.

usage: scripts/make_plot_fixtures.py COMPARE.json HARDNESS.json
"""
import json
import sys

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def main():
    compare, hardness = sys.argv[1], sys.argv[2]
    with open(compare) as f:
        c = json.load(f)
    with open("tests/fixtures/plots/compare_demo.json", "w") as f:
        json.dump(c, f, indent=1)
        f.write("\n")
    with open(hardness) as f:
        h = json.load(f)
    heat = set(h["heatmap"]["forget_index"])
    keep = [s for i, s in enumerate(h["samples"]) if i % 6 == 0 or s["index"] in heat]
    fields = ("index", "label", "kappa", "norm")
    out = {k: h[k] for k in ("model", "split", "n_forget", "n_retain", "kappa", "share_hard", "verdict")}
    out["class_names"] = h.get("class_names", FASHION)
    out["samples"] = [{k: round(s[k], 6) if isinstance(s[k], float) else s[k] for k in fields} for s in keep]
    hm = h["heatmap"]
    out["heatmap"] = {"forget_index": hm["forget_index"], "retain_index": hm["retain_index"],
                      "retain_label": hm["retain_label"], "retain_norm": [round(x, 6) for x in hm["retain_norm"]],
                      "k": [[round(x, 5) for x in row] for row in hm["k"]]}
    with open("tests/fixtures/plots/hardness_demo.json", "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
