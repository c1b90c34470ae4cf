"""Summaries of Nsight Compute CSV reports.

  python3 bench/ncu_summary.py ncu.csv [KERNELS_PER_STEP_GUESS]
      sums an `ncu --csv --metrics gpu__time_duration.sum` report of bench/gpu-decode-profile.js over its last decode
      step (everything after the last embedding kernel), per kernel name.
  python3 bench/ncu_summary.py --kernels ncu-raw.csv [--title NAME]
      one row per profiled kernel of an `ncu --csv --page raw` report with the sections of bench/gpu-profile.sh:
      duration, DRAM bytes / GB/s / % of peak, L2 and SM throughput (% of peak), tensor pipe (mma.sync = hmma)
      utilisation, achieved and theoretical occupancy, issue-slot use and the three largest warp-stall reasons
      (warp cycles per issued instruction spent in each state). Columns are found by name, so a metric this ncu
      version does not report prints as "-" instead of failing.
"""
import csv
import re
import sys
from collections import defaultdict


def quoted_lines(path):
    # ncu's own messages (==PROF==, ==WARNING==) and the program's output share the stream with the CSV
    return [line for line in open(path, encoding="utf-8", errors="replace") if line.startswith('"')]


def short_name(name):
    """'void glance::cuda::(anonymous namespace)::topk_single_kernel<0, 4>(int *, ...)' -> 'topk_single_kernel<0, 4>'"""
    base = re.sub(r"^void ", "", name.replace("(anonymous namespace)::", "").split("(")[0])
    stem, _, targs = base.partition("<")
    return stem.split("::")[-1] + ("<" + targs if targs else "")


def step_summary(path):
    rows = list(csv.DictReader(quoted_lines(path)))
    rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
    last = max(i for i, r in enumerate(rows) if "embedding" in r["Kernel Name"])
    step = rows[last:]
    tot = defaultdict(float)
    cnt = defaultdict(int)
    unit = step[0]["Metric Unit"]
    for r in step:
        name = short_name(r["Kernel Name"]).split("<")[0][:60]
        v = float(r["Metric Value"].replace(",", ""))
        tot[name] += v
        cnt[name] += 1
    total = sum(tot.values())
    print(f"kernels in the step: {len(step)}, summed kernel time {total:.1f} {unit}")
    for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
        print(f"{v:10.1f} {unit} {cnt[k]:4d}x  {k}")


def to_float(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return None


def scaled(value, unit, to):
    """value in `unit` converted to `to` (time: ns/us/ms/s, bytes: byte/Kbyte/Mbyte/Gbyte)."""
    if value is None:
        return None
    factors = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1.0,
               "second": 1.0, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12,
               "KB": 1e3, "MB": 1e6, "GB": 1e9}
    if unit not in factors or to not in factors:
        return value
    return value * factors[unit] / factors[to]


def kernel_summary(path, title):
    lines = quoted_lines(path)
    if len(lines) < 3:
        print(f"{title}: no kernel rows in {path}")
        return
    reader = list(csv.reader(lines))
    header, units, rows = reader[0], reader[1], reader[2:]
    col = {name: i for i, name in enumerate(header)}

    def get(row, name, to=None):
        i = col.get(name)
        if i is None or i >= len(row):
            return None
        v = to_float(row[i])
        return scaled(v, units[i], to) if to else v

    def first(row, names, to=None):
        for n in names:
            v = get(row, n, to)
            if v is not None:
                return v
        return None

    stall_cols = []
    for i, name in enumerate(header):
        m = re.match(r"smsp__average_warp_latency_issue_stalled_(\w+)\.ratio$", name) or \
            re.match(r"smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$", name)
        if m and m.group(1) not in ("not_issued",):
            stall_cols.append((m.group(1), i))

    def fmt(v, spec="{:.0f}"):
        return "-" if v is None else spec.format(v)

    print(f"\n### {title}\n")
    print("| kernel | grid × block | regs | µs | DRAM GB/s (% peak) | L2 % | SM % | tensor (hmma) % | occupancy "
          "achieved / theor. % | issue slots % | top stalls (cycles per issued instr.) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r[col["Kernel Name"]] if "Kernel Name" in col else "?"
        short = short_name(name)
        grid = r[col["Grid Size"]] if "Grid Size" in col else "?"
        block = r[col["Block Size"]] if "Block Size" in col else "?"
        us = get(r, "gpu__time_duration.sum", "us")
        dram_bytes = None
        rd, wr = get(r, "dram__bytes_read.sum", "byte"), get(r, "dram__bytes_write.sum", "byte")
        if rd is not None:
            dram_bytes = rd + (wr or 0.0)
        elif get(r, "dram__bytes.sum", "byte") is not None:
            dram_bytes = get(r, "dram__bytes.sum", "byte")
        gbps = dram_bytes / (us * 1e-6) / 1e9 if dram_bytes is not None and us else None
        dram_pct = first(r, ["dram__throughput.avg.pct_of_peak_sustained_elapsed",
                             "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"])
        l2 = first(r, ["lts__throughput.avg.pct_of_peak_sustained_elapsed"])
        sm = first(r, ["sm__throughput.avg.pct_of_peak_sustained_elapsed"])
        tensor = first(r, ["sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
                           "sm__inst_executed_pipe_tensor_op_hmma.avg.pct_of_peak_sustained_active"])
        occ = first(r, ["sm__warps_active.avg.pct_of_peak_sustained_active"])
        theo = first(r, ["sm__maximum_warps_per_active_cycle_pct"])
        issue = first(r, ["smsp__issue_active.avg.pct_of_peak_sustained_active"])
        if issue is None and get(r, "smsp__issue_active.avg.per_cycle_active") is not None:
            issue = 100.0 * get(r, "smsp__issue_active.avg.per_cycle_active")  # one issue slot per scheduler and cycle
        regs = first(r, ["launch__registers_per_thread"])
        stalls = sorted(((get(r, header[i]) or 0.0, n) for n, i in stall_cols), reverse=True)[:3]
        stall_txt = ", ".join(f"{n} {v:.1f}" for v, n in stalls if v > 0) or "-"
        print(f"| {short} | {grid} × {block} | {fmt(regs)} | {fmt(us, '{:.1f}')} | {fmt(gbps)} ({fmt(dram_pct)}) | "
              f"{fmt(l2)} | {fmt(sm)} | {fmt(tensor)} | {fmt(occ)} / {fmt(theo)} | {fmt(issue)} | {stall_txt} |")


def main(argv):
    if len(argv) >= 2 and argv[1] == "--kernels":
        title = argv[argv.index("--title") + 1] if "--title" in argv else argv[2]
        kernel_summary(argv[2], title)
    elif len(argv) >= 2:
        step_summary(argv[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
