"""lm-evaluation-harness task YAMLs for the bundled eval sets (climb_arc_easy, climb_piqa,
climb_hellaswag, climb_winogrande). They read data/eval/*.jsonl ({context, choices, label}) through
`utils.load`, so no network is needed; pass this folder as lm-eval's `--include_path`."""

from pathlib import Path

BUNDLED_TASKS_DIR = Path(__file__).resolve().parent
BUNDLED_TASKS = ("climb_arc_easy", "climb_piqa", "climb_hellaswag", "climb_winogrande")
