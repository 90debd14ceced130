"""The benchmark report turns result rows into tables, a chart and the README section."""
import json

from benchmarks import report, time_model


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
                   trainable_params=params, host_ms=40.0, tflops=70.0, mfu=0.1)
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
    assert "| vit-b16-k400 | 8 | fused | 100.0 | 40.0 | 80.0 | 70.0 | 10% | 10.00 GB | 16,138,136 |" in text
    assert "copy bandwidth 3000 GB/s" in text and "Run settings: fp32_matmul=tf32, quick=1." in text
    # targets: 4× eager (≥ 3), 2× compile-max (≥ 1.5), 50% of the floor (≥ 70%); 1.6× eager adapters,
    # 1.33× full fine-tuning (< 1.5), 50% of its memory (≤ 60%)
    for line in ("speedup over eager | 4.00× | ≥ 3.00× | yes |", "speedup over compile-max | 2.00× | ≥ 1.50× | yes |",
                 "fraction of the roofline floor | 50% | ≥ 70% | **no** |",
                 "fused clips/s over eager adapters | 1.60× | ≥ 1.30× | yes |",
                 "fused clips/s over full fine-tuning | 1.33× | ≥ 1.50× | **no** |",
                 "fused peak memory / full fine-tuning's | 50% | ≤ 60% | yes |"):
        assert line in text, line
    assert (tmp_path / "Test_GPU.png").stat().st_size > 1000


def test_static_prediction_is_labelled_and_calibrated_by_a_measured_card(tmp_path):
    """The static model's report says it is predicted, lists each budget with met/missed, and — once a card
    has measured the same row — the measured / predicted ratio."""
    # 3 MB at 3 TB/s is 1 µs of HBM, the largest term, + 1 µs of ramp-up and tail: 2 µs (benchmarks/time_model.py)
    kernel = dict(name="stencil_fwd", config="-", programs=10000, warps=4, registers=64, shared=0, bytes=3e6,
                  l2_bytes=3e6, flops=0.0, warp_instructions=1e3, k_steps=0.0, stages=0, chains=[], dot_fp32=False,
                  ctas_per_sm=8, memory_us=1.0, l2_us=0.3, compute_us=0.0, issue_us=0.5, predicted_us=2.0,
                  bound="memory")
    op = dict(op="ted_adapter fwd+bwd", shape=dict(B=8, T=8, dtype="bfloat16"), device_kernels=9, bytes=4e8,
              predicted_us=200.0, ideal_bytes=3.8e8, kernels=[kernel],
              eager=dict(device_kernels=43, bytes=1.3e9, floor_us=430.0))
    static = dict(hardware=time_model.H100,
                  issue_rate=1.045e12, triton="3.x", created="2026-01-01T00:00:00", ops=[op],
                  host=dict(fused_us=100.0, fused_triton_dispatch_us=300.0, eager_us=400.0,
                            registration={"custom_op": 100.0}, fast_launches=dict(launches=66, differing=[])),
                  checks={"device kernels per TED fwd+bwd ≤ 10": dict(value=9, budget=10, met=True),
                          "host time ≤ 1/3 of eager": dict(value=0.5, budget=1 / 3, met=False)})
    (tmp_path / "static-sm90.json").write_text(json.dumps(static))
    (tmp_path / "pytest_benchmark.json").write_text(json.dumps({"benchmarks": []}))  # the GPU script's: skipped
    profile = dict(call=3, shape="ted_adapter B=8 T=8 bf16", fused=dict(device_us=300.0, host_us=600.0,
                                                                         kernels_us={"stencil_fwd": 3.0}),
                   eager=dict(device_us=900.0, host_us=1200.0))
    (tmp_path / "Test_GPU.json").write_text(json.dumps(dict(
        card="Test GPU", torch="2.x", triton="3.x", date="2026-01-01T00:00:00+00:00", rows=[_row("fused", 0.5)],
        profile=profile)))
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\n{report.END}\n")
    report.main(["--results", str(tmp_path), "--readme", str(readme)])
    text = readme.read_text()
    assert "**Predicted, not measured**" in text
    assert "| device kernels per TED fwd+bwd ≤ 10 | 9 | 10 | yes |" in text
    assert "| host time ≤ 1/3 of eager | 0.5 | 0.333 | **no** |" in text
    assert "| stencil_fwd | - | 10000 | 8 | 64 | 3.0 | 3 | 1.0 | 0.3 | 0.0 | 0.5 | 2.0 | memory |" in text
    assert "Measured on Test GPU: fused TED-Adapter fwd+bwd 500 µs (do_bench: host and device" in text
    assert "the kernels ran 300 µs of device time against 2 µs predicted for them (150.00×)" in text
    assert "| stencil_fwd | 3.0 | 2.0 | 1.50 | memory |" in text  # the time model replayed on the measured kernel
    assert "66 launches compared with Triton's, 0 differing" in text


def test_gemm_comparison_table_names_the_faster_backend_per_gemm():
    rows = [dict(suite="gemms", gemm="in: z = x·W_inᵀ", provider="triton", median_ms=0.044),
            dict(suite="gemms", gemm="in: z = x·W_inᵀ", provider="cublas", median_ms=0.031),
            dict(suite="gemms", gemm="split-K partial sums", provider="triton", median_ms=0.012)]
    table = report.gemms_table(rows)
    assert "| in: z = x·W_inᵀ | 44.0 | 31.0 | cuBLAS |" in table
    assert "| split-K partial sums | 12.0 | – | – |" in table
    assert table[-1] == "| all | 56.0 | 31.0 | cuBLAS |"


def test_the_training_step_breakdown_is_rendered_with_shares():
    result = dict(card="Test GPU", torch="2.x", triton="3.x", date="2026-01-01", rows=[],
                  profile=dict(train_breakdown=dict(shape="vit-b16-k400 B=32 fused",
                                                    ms={"vision tower: GEMMs": 30.0, "optimizer": 10.0})))
    text = report.render(result, None)
    assert "| vision tower: GEMMs | 30.00 | 75% |" in text and "| optimizer | 10.00 | 25% |" in text


def test_the_step_and_evaluation_targets_are_read_off_their_rows():
    """Issues 21 and 22's targets: the uncaptured fused step, the best fused provider against eager+compile, the
    captured B=8 step and its host time, evaluation's videos/s at 4×3 views; the evaluation table."""
    def step(provider, batch, clips, **kw):
        return dict(suite="train_step", op="m2clip_train_step", width="vit-b16-k400", B=batch, T=8, dtype="bf16",
                    provider=provider, median_ms=1000 * batch / clips, clips_per_s=clips, peak_mem_gb=12.0,
                    trainable_params=1, host_ms=kw.pop("host_ms", 50.0), tflops=300.0, mfu=kw.pop("mfu", 0.4))

    rows = [step("fused", 32, 350.0), step("fused+graph", 32, 480.0, mfu=0.5), step("eager+compile", 32, 400.0),
            step("fused+graph", 8, 320.0, host_ms=0.6),
            dict(suite="eval", op="m2clip_eval", width="vit-b16-k400", B=8, views=12, T=8, dtype="bf16",
                 provider="fused+graph", median_ms=80.0, host_ms=0.2, videos_per_s=100.0, peak_mem_gb=3.0,
                 flops=1.0, tflops=250.0, mfu=0.35)]
    text = "\n".join(report.targets_table(rows) + report.eval_table(rows))
    for line in ("| train step B=32: fused (uncaptured) clips/s | 350 clips/s | ≥ 335 clips/s | yes |",
                 "| train step B=32: best fused provider (fused+graph) clips/s | 480 clips/s | ≥ 400 clips/s | yes |",
                 "| train step B=32: fused+graph over eager+compile | 1.20× | ≥ 1.30× | **no** |",
                 "| train step B=8: fused+graph step | 25 ms | ≤ 30 ms | yes |",
                 "| train step B=8: fused+graph host time a step | 0.6 ms | ≤ 0.5 ms | **no** |",
                 "| evaluation at 4×3 views (vit-b16-k400): videos/s | 100 videos/s | ≥ 95 videos/s | yes |",
                 "| vit-b16-k400 | 8 × 12 | fused+graph | 80.0 | 0.2 | 100.0 | 250.0 | 35% | 3.00 GB |"):
        assert line in text, line


def test_the_stencil_variants_are_listed_by_kernel_fastest_first():
    rows = [dict(suite="stencils", kernel=kernel, provider=name, median_ms=ms) for kernel, name, ms in
            (("stencil_bwd", "8 warps", 0.085), ("stencil_fwd", "4 warps", 0.02), ("stencil_bwd", "4 warps", 0.06))]
    assert report.stencils_table(rows)[2:] == ["| 4 warps | stencil_bwd | 60.0 |", "| 8 warps | stencil_bwd | 85.0 |",
                                               "| 4 warps | stencil_fwd | 20.0 |"]
