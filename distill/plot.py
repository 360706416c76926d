"""Loss curves as a small self-contained SVG (no plotting library needed): one panel per stage,
one line per loss, smoothed with a moving average, on a log scale when every value is positive.

Usage: python -m distill.plot LOSSES.csv OUT.svg
"""
import csv
import math
import sys
from collections import OrderedDict

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PANEL_W, PANEL_H, PAD, COLS = 330, 190, 38, 3


def read_csv(path):
    """{stage: {loss name: [(step, value)]}} in file order."""
    out = OrderedDict()
    with open(path) as f:
        for row in csv.DictReader(f):
            out.setdefault(row["stage"], OrderedDict()).setdefault(row["name"], []).append(
                (int(row["step"]), float(row["value"])))
    return out


def smooth(values, window):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _panel(stage, series, x0, y0):
    parts = [f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="white" '
             f'stroke="#ccc"/>',
             f'<text x="{x0 + PANEL_W / 2}" y="{y0 + 14}" text-anchor="middle" '
             f'font-size="12">{stage}</text>']
    lines = {}
    for name, pts in series.items():
        steps = [p[0] for p in pts]
        vals = smooth([p[1] for p in pts], max(1, len(pts) // 40))
        if any(v != 0 for v in vals):
            lines[name] = (steps, vals)
    if not lines:
        return parts
    logy = all(v > 0 for _, vals in lines.values() for v in vals)
    tf = (lambda v: math.log10(v)) if logy else (lambda v: v)
    ys = [tf(v) for _, vals in lines.values() for v in vals]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    smax = max(max(s) for s, _ in lines.values()) or 1
    left, top = x0 + PAD, y0 + 22
    w, h = PANEL_W - PAD - 8, PANEL_H - 22 - 24
    for k, (name, (steps, vals)) in enumerate(lines.items()):
        pts = " ".join(f"{left + w * s / smax:.1f},{top + h * (1 - (tf(v) - lo) / (hi - lo)):.1f}"
                       for s, v in zip(steps, vals))
        c = COLOURS[k % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{pts}"/>')
        parts.append(f'<text x="{left + 4 + 70 * k}" y="{y0 + PANEL_H - 6}" font-size="10" '
                     f'fill="{c}">{name}</text>')
    fmt = (lambda v: f"{10 ** v:.3g}") if logy else (lambda v: f"{v:.3g}")
    parts.append(f'<text x="{x0 + 2}" y="{top + 8}" font-size="9">{fmt(hi)}</text>')
    parts.append(f'<text x="{x0 + 2}" y="{top + h}" font-size="9">{fmt(lo)}</text>')
    parts.append(f'<text x="{left + w}" y="{top + h + 12}" font-size="9" '
                 f'text-anchor="end">step {smax}</text>')
    return parts


def write_svg(curves, path, title="loss curves"):
    n = len(curves)
    rows = max(1, (n + COLS - 1) // COLS)
    width, height = COLS * (PANEL_W + 10) + 10, rows * (PANEL_H + 10) + 34
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif">',
             f'<rect width="{width}" height="{height}" fill="#f7f7f7"/>',
             f'<text x="10" y="20" font-size="14">{title}</text>']
    for i, (stage, series) in enumerate(curves.items()):
        parts += _panel(stage, series, 10 + (i % COLS) * (PANEL_W + 10),
                        30 + (i // COLS) * (PANEL_H + 10))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    write_svg(read_csv(sys.argv[1]), sys.argv[2])
