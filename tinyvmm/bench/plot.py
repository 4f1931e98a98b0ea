"""Stacked bars of the boot phases, one bar per system: SVG written directly, PNG through matplotlib."""

from xml.sax.saxutils import escape

PHASES = (("vmm_startup_s", "VMM startup", "#8da0cb"),
          ("bios_startup_s", "BIOS startup", "#66c2a5"),
          ("kernel_setup_s", "kernel setup", "#fc8d62"))


def check_plot_path(path: str) -> None:
    """Raise ValueError unless a plot can be written there: .svg, or .png with matplotlib."""
    if path.lower().endswith(".png"):
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError(f"--plot {path}: PNG plots need matplotlib (pip install matplotlib); "
                             "an .svg path needs nothing")
    elif not path.lower().endswith(".svg"):
        raise ValueError(f"--plot {path}: the plot must end in .svg or .png")


TITLE = "Boot phases (median of the runs)"


def plot_phases(summary: dict, path: str, title: str = TITLE) -> None:
    check_plot_path(path)
    if path.lower().endswith(".png"):
        _png(summary, path, title)
    else:
        with open(path, "w") as f:
            f.write(svg(summary, title))


def _tick_step(longest: float) -> float:
    """A 1, 2 or 5 times a power of ten giving four to ten ticks up to `longest`."""
    import math
    step = 10 ** math.floor(math.log10(longest))
    for factor in (1, 2, 5, 10):
        if longest / (step * factor) <= 8:
            return step * factor
    return step * 10


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 0.1 else f"{value:.3f} s"


def svg(summary: dict, title: str = TITLE) -> str:
    """Stacked horizontal bars with an x axis in seconds, each phase's value on its bar
    (where it fits) and in its tooltip, and each total at the bar's end."""
    systems = list(summary)
    width, bar, gap, left, top = 820, 46, 18, 190, 40
    axis_y = top + len(systems) * (bar + gap)
    height = axis_y + 80
    longest = max(sum(summary[s].get(p, 0) for p, _, _ in PHASES) for s in systems) or 1
    scale = (width - left - 100) / longest
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<text x="{left}" y="22" font-size="15">{escape(title)}</text>']
    step = _tick_step(longest)
    tick = 0.0
    while tick <= longest * 1.0001:
        x = left + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g}</text>')
        tick += step
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - 100}" y2="{axis_y}" stroke="#333"/>')
    out.append(f'<text x="{left + (width - left - 100) / 2:.0f}" y="{axis_y + 34}" '
               f'text-anchor="middle">seconds</text>')
    for row, system in enumerate(systems):
        y = top + row * (bar + gap)
        out.append(f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">{escape(system)}</text>')
        x = left
        for key, label, colour in PHASES:
            value = summary[system].get(key, 0)
            w = value * scale
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar}" '
                       f'fill="{colour}"><title>{escape(label)}: {_seconds(value)}</title></rect>')
            if w > 64:
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + bar / 2 + 4}" text-anchor="middle" '
                           f'font-size="11">{_seconds(value)}</text>')
            x += w
        total = summary[system].get("total_s", 0)
        out.append(f'<text x="{x + 6:.1f}" y="{y + bar / 2 + 4}">{_seconds(total)}</text>')
    y = height - 24
    for i, (_, label, colour) in enumerate(PHASES):
        out.append(f'<rect x="{left + i * 160}" y="{y}" width="14" height="14" fill="{colour}"/>')
        out.append(f'<text x="{left + i * 160 + 20}" y="{y + 12}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _png(summary: dict, path: str, title: str = TITLE) -> None:
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
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
