"""Write a small Parquet of prompts for `make demo`: python -m jobs.demo_prompts OUT [COUNT]."""

from __future__ import annotations

import itertools
import sys

import pyarrow as pa
import pyarrow.parquet as pq

SUBJECTS = ["a lighthouse", "a red fox", "an astronaut", "a castle", "a teapot", "a sailing ship", "a dragon",
            "a mountain lake", "a robot", "a bowl of fruit"]
STYLES = ["oil painting", "watercolor", "photo, golden hour", "pixel art", "pencil sketch", "isometric render",
          "ukiyo-e print", "neon noir", "studio photo", "claymation"]
PLACES = ["at dawn", "in the rain", "on the moon"]


def main() -> None:
    out, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200
    prompts = [f"{s}, {st}, {p}" for s, st, p in itertools.product(SUBJECTS, STYLES, PLACES)][:count]
    table = pa.table({"id": [f"demo-{i:04d}" for i in range(len(prompts))], "prompt": prompts,
                      "seed": [None if i % 4 == 0 else i for i in range(len(prompts))]})
    pq.write_table(table, out)
    print(f"wrote {len(prompts)} prompts to {out}")


if __name__ == "__main__":
    main()
