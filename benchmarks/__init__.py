"""shardseal's benchmarks.

``python -m benchmarks`` runs the comparison (``benchmarks/compare.py``): shardseal next to its
ceilings (memcpy, ``openssl speed``) and its peers, over message sizes and thread counts, and
writes a JSON result file, a Markdown table and a PNG plot. ``pytest benchmarks/ --benchmark-only``
runs the pytest-benchmark suite. ``bench_core.py`` and ``bench_files.py`` still run as scripts.
"""
