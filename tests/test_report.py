"""The benchmark report turns result rows into tables, a chart and the README section."""
import json

from benchmarks import report


def _row(provider, ms, **kw):
    base = dict(suite="ops", op="ted_adapter", width="ViT-B/16", B=8, T=8, dtype="bf16", passes="fwdbwd",
                provider=provider, median_ms=ms, fraction_of_floor=0.5)
    return {**base, **kw}


def test_report_tables_chart_and_readme(tmp_path):
    result = {
        "card": "Test GPU", "torch": "2.x", "triton": "3.x", "date": "2026-01-01T00:00:00+00:00",
        "hardware": {"bandwidth_gbs": 3000.0, "peak_tflops": {"bf16": 700.0, "fp32": 350.0}},
        "rows": [
            _row("fused", 0.5), _row("eager", 2.0), _row("compile-max", 1.0),
            *(dict(suite="train_step", op="m2clip_train_step", width="vit-b16-k400", B=8, T=8, dtype="bf16",
                   provider=provider, median_ms=8000 / clips, clips_per_s=clips, peak_mem_gb=mem,
                   trainable_params=params)
              for provider, clips, mem, params in (("fused", 80.0, 10.0, 16138136), ("eager", 50.0, 12.0, 16138136),
                                                   ("full-finetune", 60.0, 20.0, 165000000))),
        ],
        "settings": {"quick": "1", "fp32_matmul": "tf32"},
    }
    (tmp_path / "Test_GPU.json").write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nafter\n")
    report.main(["--results", str(tmp_path), "--readme", str(readme)])
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.rstrip().endswith("after")
    assert "| ted_adapter | ViT-B/16 | 8 | 8 | bf16 | fwdbwd | 0.500 | 2.000 | – | 1.000 | 4.00 | 2.00 | 50% |" in text
    assert "| vit-b16-k400 | 8 | fused | 100.0 | 80.0 | 10.00 GB | 16,138,136 |" in text
    assert "copy bandwidth 3000 GB/s" in text and "Run settings: fp32_matmul=tf32, quick=1." in text
    # targets: 4× eager (≥ 3), 2× compile-max (≥ 1.3), 50% of the floor (≥ 60%); 1.6× eager adapters,
    # 1.33× full fine-tuning (< 1.5), 50% of its memory (≤ 60%)
    for line in ("speedup over eager | 4.00× | ≥ 3.00× | yes |", "speedup over compile-max | 2.00× | ≥ 1.30× | yes |",
                 "fraction of the roofline floor | 50% | ≥ 60% | **no** |",
                 "fused clips/s over eager adapters | 1.60× | ≥ 1.30× | yes |",
                 "fused clips/s over full fine-tuning | 1.33× | ≥ 1.50× | **no** |",
                 "fused peak memory / full fine-tuning's | 50% | ≤ 60% | yes |"):
        assert line in text, line
    assert (tmp_path / "Test_GPU.png").stat().st_size > 1000
