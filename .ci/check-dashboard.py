"""Checks examples/grafana-dashboard.json: valid JSON, and every panel's PromQL parses (each is written into a
rules file as a recording rule, for `promtool check rules`), naming only dlr_poller_ metrics."""
import json
import re
import sys

dashboard = json.load(open(sys.argv[1]))
out = sys.argv[2]
rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        expr = target["expr"]
        for metric in re.findall(r"\b([a-z_]+_(?:total|seconds|ratio|code))\b", expr):
            if not metric.startswith("dlr_poller_"):
                sys.exit(f"panel {panel['title']!r}: unexpected metric {metric}")
        rules.append(f"      - record: panel_{panel['id']}_{target['refId'].lower()}\n        expr: {json.dumps(expr)}\n")
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n" + "".join(rules))
print(f"{sys.argv[1]}: {len(rules)} queries written to {out}")
