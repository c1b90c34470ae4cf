"""Sums an ncu --csv gpu__time_duration report of bench/gpu-decode-profile.js over its last decode step.
usage: python3 bench/ncu_summary.py ncu.csv KERNELS_PER_STEP_GUESS"""
import csv
import sys
from collections import defaultdict

rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
# the last step: everything after the last embedding kernel
last = max(i for i, r in enumerate(rows) if "embedding" in r["Kernel Name"])
step = rows[last:]
tot = defaultdict(float)
cnt = defaultdict(int)
unit = step[0]["Metric Unit"]
for r in step:
    name = r["Kernel Name"].split("(")[0].split("<")[0][:60]
    v = float(r["Metric Value"].replace(",", ""))
    tot[name] += v
    cnt[name] += 1
total = sum(tot.values())
print(f"kernels in the step: {len(step)}, summed kernel time {total:.1f} {unit}")
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{v:10.1f} {unit} {cnt[k]:4d}x  {k}")
