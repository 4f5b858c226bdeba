"""index.html of a results folder: every figure, the summary table and the resolved configuration on one static page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml

from sim.fileio import write_text_atomic

# Marks each image with its decoded width once the page has loaded (0 = broken): lets a headless browser's
# --dump-dom show whether every figure loaded, without a browser-driver dependency.
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), broken = 0;
  imgs.forEach(function (img) {
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (!(img.complete && img.naturalWidth > 0)) broken += 1;
  });
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken-images", String(broken));
});
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; } .skipped { color: #8a4b00; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ccc; padding: 3px 6px; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }
</style>"""


def write_index(out: Path, name: str, spec: dict[str, Any], swept: list[str],
                table: tuple[list[str], list[list[str]]], drawn: list[tuple[str, str, str | None]],
                runs: list[str]) -> None:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(name)}</title>{STYLE}</head>",
             f"<body><h1>{e(name)}</h1>",
             f"<p>{len(runs)} run{'s' * (len(runs) != 1)}; swept: {e(', '.join(swept) or 'nothing (one run)')}. "
             "Built from the folder's files by <code>python -m sim report</code> (no simulation). "
             "Tables: <a href='tables/summary.md'>Markdown</a>, <a href='tables/summary.tex'>LaTeX</a>, "
             "<a href='tables/summary.csv'>CSV</a>; all summary keys: <a href='summaries.csv'>summaries.csv</a>, "
             "<a href='summaries.parquet'>summaries.parquet</a>.</p>", "<h2>Figures</h2>"]
    for stem, caption, skipped in drawn:
        if skipped is None:
            parts.append(f"<figure id='{e(stem)}'><img src='figures/{e(stem)}.png' alt='{e(caption)}'>"
                         f"<figcaption>{e(caption)} <a href='figures/{e(stem)}.pdf'>PDF</a></figcaption></figure>")
        else:
            title = e(stem.replace("_", " "))
            parts.append(f"<p class='skipped' id='{e(stem)}'>Not drawn — {title}: {e(skipped)}.</p>")
    header, rows = table
    parts.append("<h2>Summary</h2><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                 + "</tr></thead><tbody>")
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
    parts.append("</tbody></table>")
    parts.append("<h2>Runs</h2><ul>" + "".join(
        f"<li><a href='{e(r)}/summary.md'>{e(r)}</a> (<a href='{e(r)}/config.yaml'>config</a>, "
        f"<a href='{e(r)}/plots/k_histogram.png'>plots</a>)</li>" for r in runs) + "</ul>")
    parts.append("<h2>Resolved configuration</h2><pre>" + e(yaml.safe_dump(spec, sort_keys=False)) + "</pre>")
    parts.append(CHECK_SCRIPT + "</body></html>\n")
    write_text_atomic(out / "index.html", "\n".join(parts))
