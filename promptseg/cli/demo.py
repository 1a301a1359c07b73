"""``promptseg demo``: the bundled CT tumour with the bundled LiteMedSAM."""

from __future__ import annotations


def register(sub) -> None:
    demo = sub.add_parser("demo", help="segment the bundled lung CT tumour with the bundled LiteMedSAM",
                          description="Segment the lung tumour of the bundled real CT from one box on its middle "
                          "slice, write the mask and an overlay PNG, and print the Dice against the expert mask.")
    demo.add_argument("--output-dir", default="demo_output", help="where to write the outputs (default demo_output)")
    demo.set_defaults(func=run)



def run(args) -> int:
    from ..demo import run_demo

    res = run_demo(args.output_dir)
    print(f"prompt: box {tuple(int(v) for v in res.box)} on slice {res.prompt_slice}, no z-range")
    print(f"segmented slices {res.slices}; expert mask on slices {res.reference_slices}")
    print(f"wrote {res.mask_path}")
    print(f"wrote {res.overlay_path}")
    print(f"Dice vs expert mask: {res.dice:.3f}")
    return 0


