"""Draws the PNG of a ``python -m benchmarks`` result file.

Four panels: encrypt and decrypt throughput against message size (log-log, with the ceilings),
throughput against threads at the largest size, and small-message latency per call.
Re-draw a result file with ``python -m benchmarks.plot results.json [out.png]``.
"""

from __future__ import annotations

import sys
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FLOOR_GBPS = 0.01  # throughput panels start here; slower series are named in a note on the panel

# (id prefix, short legend label, colour, marker, line style, line width); first match wins
STYLES = [
    ("native_alloc_tall", "shardseal.encrypt / decrypt (default threads)", "#4a90d9", "D", "-", 2.2),
    ("memcpy_t1", "memcpy, 1 thread", "black", "s", "-", 1.6),
    ("memcpy_t", "memcpy, split across {t} threads", "black", "s", "--", 1.6),
    ("native_into_t1", "shardseal encrypt_into / decrypt_into, 1 thread", "#1f4e9c", "o", "--", 2.2),
    ("native_into_t", "shardseal encrypt_into / decrypt_into, {t} threads", "#1f4e9c", "o", "-", 3.0),
    ("native_alloc_t1", "shardseal encrypt / decrypt (allocating), 1 thread", "#4a90d9", "D", "--", 1.6),
    ("native_alloc_t", "shardseal encrypt / decrypt (allocating), {t} threads", "#4a90d9", "D", "-", 2.2),
    ("python_into", "shardseal python backend (encrypt_into)", "#17becf", "v", "-", 1.6),
    ("cryptography_cobblestone_into", "cryptography.cobblestone update_into", "#2ca02c", "^", "-", 1.4),
    ("cryptography_cobblestone", "cryptography.cobblestone update+finalize", "#2ca02c", "^", ":", 1.4),
    ("aesgcm_oneshot", "cryptography AESGCM one-shot", "#ff7f0e", "<", "-", 1.4),
    ("aesgcm_chunked", "cryptography AESGCM 16 KiB chunks", "#ff7f0e", ">", "--", 1.4),
    ("pycryptodome", "pycryptodome AES-GCM", "#9467bd", "p", "-", 1.4),
    ("tink_streaming", "tink StreamingAead AES256_GCM_HKDF_1MB", "#8c564b", "h", "-", 1.4),
    ("tink_aead", "tink Aead AES256_GCM", "#8c564b", "h", "--", 1.4),
    ("fernet", "cryptography Fernet (AES-128-CBC + HMAC)", "#d62728", "x", "-", 1.4),
    ("pyrage", "pyrage / age (ChaCha20-Poly1305)", "#e377c2", "*", "-", 1.4),
    ("pyaes", "pyaes, pure-Python AES-CTR (dotted: extrapolated)", "#7f7f7f", ".", "-", 1.4),
    ("shardseal_cobblestone", "shardseal.cobblestone encrypt / decrypt", "#1f4e9c", "o", ":", 2.0),
    ("python_alloc", "shardseal.encrypt (python backend)", "#17becf", "v", "-", 1.6),
]


def style(impl: str, threads: Optional[int]) -> tuple:
    for prefix, label, colour, marker, line, width in STYLES:
        if impl == prefix or (impl.startswith(prefix) and not prefix.endswith("_t1")):
            return label.format(t=threads), colour, marker, line, width
    return impl, "#bcbd22", "o", "-", 1.2


def legend_order(label: str) -> float:
    """Legend entries in STYLES order, the cipher ceilings right after memcpy."""
    if label.startswith("openssl speed"):
        return 2.5 + ("processes" in label) * 0.1
    if label.startswith("cryptography AESGCM 16 KiB in cache"):
        return 2.7
    if label.startswith("shardseal.encrypt / decrypt (default threads)"):
        return len(STYLES) - 2.5  # first in STYLES only so that it matches before native_alloc_t
    for i, (_prefix, pattern, *_rest) in enumerate(STYLES):
        if label == pattern or label.startswith(pattern.split("{t}")[0]) and "{t}" in pattern:
            return i
    return len(STYLES)


def size_label(n: int) -> str:
    for unit, value in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= value and n % value == 0:
            return f"{n // value} {unit}"
    return f"{n} B"


def _size_axis(ax, sizes: list) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sizes, [size_label(s) for s in sizes])
    ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)


def _throughput_panel(ax, rows: list, op: str, sizes: list, handles: dict) -> None:
    lines: dict = {}
    for r in rows:
        if r["kind"] == "throughput" and r["op"] in (op, "copy") and r["gbps"]:
            lines.setdefault((r["impl"], r["threads"]), []).append(r)
    for (impl, threads), points in lines.items():
        label, colour, marker, line, width = style(impl, threads)
        measured = [p for p in points if not p["extrapolated"]]
        extra = [p for p in points if p["extrapolated"]]
        (h,) = ax.plot([p["size"] for p in measured], [p["gbps"] for p in measured], color=colour, marker=marker,
                       linestyle=line, linewidth=width, markersize=5)
        if extra and measured:
            ax.plot([measured[-1]["size"]] + [p["size"] for p in extra],
                    [measured[-1]["gbps"]] + [p["gbps"] for p in extra], color=colour, linestyle=":", linewidth=width)
        handles.setdefault(label, h)
    # size-independent cipher ceilings as horizontal lines
    for r in rows:
        if r["kind"] != "cipher" or r["op"] != op or not r["gbps"]:
            continue
        if r["impl"] == "openssl_speed":
            procs = r["threads"]
            label = f"openssl speed aes-256-gcm, 16 KiB in cache, {procs} process{'es' if procs > 1 else ''}"
            colour, line = ("#555555", ":") if procs == 1 else ("#555555", "-.")
        else:
            label, colour, line = "cryptography AESGCM 16 KiB in cache (bundled OpenSSL), 1 thread", "#b8860b", ":"
        h = ax.axhline(r["gbps"], color=colour, linestyle=line, linewidth=1.8)
        handles.setdefault(label, h)
    _size_axis(ax, sizes)
    ax.set_yscale("log")
    # series far below the rest (pure-Python AES) would squash the interesting range: name them instead
    off = []
    for (impl, threads), points in lines.items():
        top = max(p["gbps"] for p in points)
        if top < FLOOR_GBPS:
            off.append(f"{style(impl, threads)[0].split(' (')[0]}: {top:.2g} GB/s")
    low = min([p["gbps"] for points in lines.values() for p in points if p["gbps"] >= FLOOR_GBPS] or [FLOOR_GBPS])
    ax.set_ylim(bottom=max(FLOOR_GBPS, low / 2))
    if off:
        ax.text(0.99, 0.015, "below the axis: " + "; ".join(off), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color="#444444", bbox={"facecolor": "white", "edgecolor": "#999999", "alpha": 0.9})
    ax.set_xlabel("message size (bytes per call)")
    ax.set_ylabel("throughput, GB/s (1e9 plaintext bytes/s, log)")
    ax.set_title(f"{op.capitalize()}: throughput vs message size")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", axis="y", alpha=0.12)


def _threads_panel(ax, rows: list, size: int, handles: dict) -> None:
    wanted = [("memcpy_t", "copy"), ("native_into_t", "encrypt"), ("native_into_t", "decrypt"),
              ("native_alloc_t", "encrypt"), ("native_alloc_t", "decrypt")]
    threads_seen: set = set()
    for prefix, op in wanted:
        points = sorted((r["threads"], r["gbps"]) for r in rows
                        if r["kind"] == "throughput" and r["impl"].startswith(prefix) and r["impl"] != "native_alloc_tall"
                        and r["op"] == op and r["size"] == size and r["gbps"])
        if not points:
            continue
        threads_seen.update(t for t, _ in points)
        _label, colour, marker, _line, width = style(prefix + "2", 2)
        name = {"memcpy_t": "memcpy", "native_into_t": "shardseal {op}_into",
                "native_alloc_t": "shardseal {op} (allocating)"}[prefix].format(op=op)
        h, = ax.plot([t for t, _ in points], [g for _, g in points], color=colour, marker=marker,
                     linestyle="-" if op in ("encrypt", "copy") else "--", linewidth=width, markersize=7,
                     label=name)
    for op, line in (("encrypt", "-."), ("decrypt", ":")):
        points = sorted((r["threads"], r["gbps"]) for r in rows
                        if r["kind"] == "cipher" and r["impl"] == "openssl_speed" and r["op"] == op)
        if points:
            threads_seen.update(t for t, _ in points)
            ax.plot([t for t, _ in points], [g for _, g in points], color="#555555", marker="o", linestyle=line,
                    linewidth=1.5, label=f"openssl speed {op}, 16 KiB in cache (processes)")
    ticks = sorted(threads_seen) or [1]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(min(ticks) - 0.3, max(ticks) + 0.3)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("threads (openssl: processes)")
    ax.set_ylabel("throughput, GB/s (1e9 plaintext bytes/s)")
    ax.set_title(f"Scaling with threads at {size_label(size)}")
    ax.grid(True, alpha=0.35)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)


def _latency_panel(ax, rows: list, sizes: list, handles: dict) -> None:
    lines: dict = {}
    for r in rows:
        if r["kind"] == "latency" and r["op"] == "encrypt" and r["us_per_call"]:
            lines.setdefault((r["impl"], r["threads"]), []).append(r)
    for (impl, threads), points in lines.items():
        label, colour, marker, line, width = style(impl, threads)
        (h,) = ax.plot([p["size"] for p in points], [p["us_per_call"] for p in points], color=colour, marker=marker,
                       linestyle=line, linewidth=width, markersize=5)
        handles.setdefault(label, h)
    _size_axis(ax, sizes)
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes per call)")
    ax.set_ylabel("wall time per encrypt call, µs (log; lower is better)")
    ax.set_title("Small messages: encrypt latency per call")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", axis="y", alpha=0.12)
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot(result: dict, path: str) -> None:
    env, settings, rows = result["environment"], result["settings"], result["rows"]
    sizes, latency_sizes = settings["sizes"], settings["latency_sizes"]
    fig, axes = plt.subplots(2, 2, figsize=(17, 13.5))
    handles: dict = {}
    _throughput_panel(axes[0][0], rows, "encrypt", sizes, handles)
    _throughput_panel(axes[0][1], rows, "decrypt", sizes, handles)
    # the same y range for both throughput panels, so that they compare at a glance
    low = min(axes[0][0].get_ylim()[0], axes[0][1].get_ylim()[0])
    high = max(axes[0][0].get_ylim()[1], axes[0][1].get_ylim()[1])
    for ax in axes[0]:
        ax.set_ylim(low, high)
    _threads_panel(axes[1][0], rows, max(sizes), handles)
    _latency_panel(axes[1][1], rows, latency_sizes, handles)
    fig.suptitle(f"shardseal vs ceilings and peers: {env['cpu_model']}, {env['cores']} cores, "
                 f"{env['openssl_cli'].split(' (')[0]} (cryptography: {env['cryptography_openssl'].split(' ')[1]}), "
                 f"{'--quick' if settings['quick'] else 'full run'}; median of timed runs, every output verified",
                 fontsize=12)
    labels = sorted(handles, key=legend_order)
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=3, fontsize=9,
               frameon=True, title="throughput and latency panels (same colour = same implementation)")
    fig.tight_layout(rect=(0, 0.13, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import json

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m benchmarks.plot results.json [out.png]")
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    out = sys.argv[2] if len(sys.argv) == 3 else sys.argv[1].rsplit(".", 1)[0] + ".png"
    plot(data, out)
    print(f"wrote {out}")
