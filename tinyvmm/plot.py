"""Stacked bars of the boot phases, one bar per system: SVG written directly, PNG through matplotlib."""

from xml.sax.saxutils import escape

PHASES = (("vmm_startup_s", "VMM startup", "#8da0cb"),
          ("bios_startup_s", "BIOS startup", "#66c2a5"),
          ("kernel_setup_s", "kernel setup", "#fc8d62"))


def plot_phases(summary: dict, path: str) -> None:
    if path.lower().endswith(".png"):
        _png(summary, path)
    elif path.lower().endswith(".svg"):
        with open(path, "w") as f:
            f.write(svg(summary))
    else:
        raise ValueError(f"{path}: the plot must end in .svg or .png")


def svg(summary: dict) -> str:
    systems = list(summary)
    width, bar, gap, left, top, height = 760, 46, 18, 170, 40, 0
    height = top + len(systems) * (bar + gap) + 60
    longest = max(sum(summary[s].get(p, 0) for p, _, _ in PHASES) for s in systems) or 1
    scale = (width - left - 90) / longest
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<text x="{left}" y="22" font-size="15">Boot phases (median seconds)</text>']
    for row, system in enumerate(systems):
        y = top + row * (bar + gap)
        out.append(f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">{escape(system)}</text>')
        x = left
        for key, label, colour in PHASES:
            value = summary[system].get(key, 0)
            w = value * scale
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar}" '
                       f'fill="{colour}"><title>{escape(label)}: {value:.3f} s</title></rect>')
            x += w
        total = summary[system].get("total_s", 0)
        out.append(f'<text x="{x + 6:.1f}" y="{y + bar / 2 + 4}">{total:.3f} s</text>')
    y = height - 30
    for i, (_, label, colour) in enumerate(PHASES):
        out.append(f'<rect x="{left + i * 160}" y="{y}" width="14" height="14" fill="{colour}"/>')
        out.append(f'<text x="{left + i * 160 + 20}" y="{y + 12}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _png(summary: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("PNG plots need matplotlib (pip install matplotlib); "
                         "an .svg path needs nothing") from None
    systems = list(summary)
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(systems) + 1.5))
    left = [0.0] * len(systems)
    for key, label, colour in PHASES:
        values = [summary[s].get(key, 0) for s in systems]
        ax.barh(systems, values, left=left, label=label, color=colour)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
