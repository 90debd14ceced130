"""``python -m benchmarks.static [--out FILE]``: run the static model and print what it predicts."""
import argparse
import os

from . import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(__file__)), "results",
                                                   "static-sm90.json"))
    args = parser.parse_args()
    report = run(args.out)
    for op in report["ops"]:
        print(f"{op['op']}: {op['device_kernels']} device kernels, {op['bytes'] / 1e6:.0f} MB, predicted "
              f"{op['predicted_us']:.0f} µs (eager: {op['eager']['device_kernels']} kernels, "
              f"{op['eager']['bytes'] / 1e6:.0f} MB, floor {op['eager']['floor_us']:.0f} µs)")
        for k in op["kernels"]:
            print(f"  {k['name']:13s} {k['config']:20s} {k['programs']:6d} programs  {k['registers']:3d} regs  "
                  f"{k['bytes'] / 1e6:6.1f} MB  mem {k['memory_us']:6.1f}  tc {k['compute_us']:6.1f}  "
                  f"issue {k['issue_us']:6.1f}  -> {k['predicted_us']:6.1f} µs ({k['bound']})")
    host = report["host"]
    print(f"host per TED fwd+bwd (Triton's dispatch run, driver call stubbed): fused {host['fused_us']:.0f} µs "
          f"({host['fused_triton_dispatch_us']:.0f} µs through Triton's own launch path), "
          f"eager {host['eager_us']:.0f} µs; {host['fast_launches']['launches']} launches compared with Triton's")
    for name, c in report["checks"].items():
        print(f"{'met ' if c['met'] else 'MISSED'} {name}: {c['value']:.3g} (budget {c['budget']:.3g})")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
