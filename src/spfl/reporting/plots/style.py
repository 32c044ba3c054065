"""How every figure looks and is saved: the default style (from the config's ``style`` section), one
color, marker and label per method across all figures, axis labels, and byte-reproducible files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import seaborn as sns

from spfl.records import write_atomic

DEFAULT_STYLE: dict[str, Any] = {
    "theme": "whitegrid", "context": "paper", "palette": "colorblind", "font_scale": 1.1, "dpi": 200,
    "width_in": 4.5, "height_in": 3.4, "error_bars": "band",
}


class MethodStyle(NamedTuple):
    label: str
    marker: str
    color_slot: int  # index into the palette: SP-FL the first, most salient color; the bound a muted one
    line: str = "-"


# How each method is drawn, whatever subset a figure shows (one entry per method of spfl.configuration.methods).
METHOD_STYLES = {
    "ideal": MethodStyle("Ideal (error-free)", "o", 7, "--"),  # a reference, not a competitor: dashed
    "digital": MethodStyle("Digital FL", "s", 1),
    "digital_reuse": MethodStyle("Digital FL + reuse", "D", 2),
    "scheduling": MethodStyle("Scheduling", "^", 3),
    "signsgd": MethodStyle("signSGD", "v", 4),
    "spfl": MethodStyle("SP-FL", "*", 0),
    "spfl_uniform": MethodStyle("SP-FL, uniform allocation", "P", 5),
    "spfl_power": MethodStyle("SP-FL, power only", "X", 6),
    "spfl_bandwidth": MethodStyle("SP-FL, bandwidth only", "<", 8),
    "spfl_noreuse": MethodStyle("SP-FL, no sign reuse", ">", 9),
}
METHOD_LABELS = {name: style.label for name, style in METHOD_STYLES.items()}
MARKERS = {name: style.marker for name, style in METHOD_STYLES.items()}
DASHED = {name: style.line for name, style in METHOD_STYLES.items() if style.line != "-"}


AXIS_LABELS = {
    "round": "Communication round",
    "total_bandwidth_mhz": r"Total bandwidth $B_{\mathrm{tot}}$ (MHz)",
    "max_power_dbm": r"Device power budget $P_{\max}$ (dBm)",
    "num_devices": r"Number of devices $K$",
    "dirichlet_beta": r"Dirichlet concentration $\beta$ (smaller = more non-IID)",
    "iteration": "Alternating-optimization iteration",
    "rank": "Device rank by channel gain (1 = strongest)",
}
LOG_AXES = {"total_bandwidth_mhz", "dirichlet_beta"}


def apply_style(style: Mapping[str, Any]) -> dict[str, Any]:
    """Set the seaborn theme of ``style`` (over DEFAULT_STYLE) and return the complete style."""
    style = {**DEFAULT_STYLE, **dict(style)}
    sns.set_theme(context=style["context"], style=style["theme"], palette=style["palette"],
                  font_scale=style["font_scale"])
    plt.rcParams.update({"pdf.fonttype": 42, "savefig.bbox": "tight"})
    return style


def method_colors(palette: str) -> dict[str, Any]:
    """One fixed color per method, whatever subset a figure shows."""
    colors = sns.color_palette(palette, n_colors=len(METHOD_STYLES))
    return {name: colors[style.color_slot] for name, style in METHOD_STYLES.items()}


def save_figure(fig, pdf: str | Path, png: str | Path, dpi: int) -> None:
    """PDF and PNG without time stamps or software versions, so the same figure gives the same bytes;
    each written atomically (readable per the umask, never half-written)."""
    try:
        write_atomic(pdf, lambda handle: fig.savefig(handle, format="pdf", metadata={
            "CreationDate": None, "Producer": None, "Creator": None}))
        write_atomic(png, lambda handle: fig.savefig(handle, format="png", dpi=dpi, metadata={"Software": None}))
    finally:
        plt.close(fig)
