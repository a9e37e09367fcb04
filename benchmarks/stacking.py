"""StackingSER on EmoDB speaker folds: the random-forest stack vs. its best single base model.

Runs (or reads back: base runs resume) ``crabser stack configs/stacking/emodb.yaml``: five base
models in five speaker-independent folds, a stack per fold, every score on all folds' test clips
pooled. The baseline is the base model a user would have picked without stacking: the one with
the best pooled *validation* Macro-F1 (the test split never chooses). Prints and writes Macro-F1,
balanced-bootstrap Macro-F1 (100 class-balanced subsets, 95 % interval) and UAR of every model,
and the ratio of the stack's test Macro-F1 to that baseline's.

About 100 minutes on 2 cores (the paralinguistic base models dominate), so ``make bench`` leaves
it out; ``python -m benchmarks.run_all --long`` includes it. ``--quick``: two base models, two
folds, one epoch, in runs/quick.

Usage (from the repository root): python -m benchmarks.stacking [--config configs/stacking/emodb.yaml] [--quick]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import command_line, header, quick_overrides, write_section
from crabser.stacking import load_stack_config, run_stack, stacking_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/stacking/emodb.yaml")
    parser.add_argument("--quick", action="store_true", help="2 base models, 2 folds, 1 epoch, in runs/quick")
    args = parser.parse_args()
    stack = load_stack_config(args.config)
    overrides = ["train.progress=false", *quick_overrides(args.quick)]
    if args.quick:
        keep = list(stack.models)[-2:]
        stack = stack.model_copy(update={"models": {name: stack.models[name] for name in keep}})
        overrides += ["data.folds=2", "train.epochs=1"]
    started = time.perf_counter()
    summary = run_stack(stack, overrides)
    minutes = (time.perf_counter() - started) / 60
    table = summary["metrics"]
    bases = [name for name in table if name != "stack"]
    chosen = max(bases, key=lambda name: table[name]["val"]["macro_f1"])
    best_test = max(bases, key=lambda name: table[name]["test"]["macro_f1"])
    ratio = table["stack"]["test"]["macro_f1"] / table[chosen]["test"]["macro_f1"]
    verdict = (
        f"Stack test Macro-F1 / base model chosen on validation ({chosen}) = **{ratio:.3f}**; "
        f"balanced F1 {table['stack']['test']['balanced_macro_f1']:.4f} vs. {table[chosen]['test']['balanced_macro_f1']:.4f}. "
        f"Best base model on test (for reading only): {best_test}, Macro-F1 {table[best_test]['test']['macro_f1']:.4f}.\n"
    )
    body = (
        header(command_line())
        + f"- config: `{args.config}`; folds: {summary['folds']}; forest: {summary['forest']}; fitted on: {summary['fit_on']} "
        f"(out-of-fold Macro-F1 of the forests {summary['out_of_fold_macro_f1']:.4f})\n"
        f"- time: {minutes:.0f} min in this run (finished base runs are read back)\n\n"
        + stacking_markdown(table) + "\n" + verdict
    )
    print(body)
    write_section("StackingSER on EmoDB speaker folds: stack vs. best single model", body)


if __name__ == "__main__":
    main()
