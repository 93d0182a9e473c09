r"""Teach a pretrained Parakeet TDT-CTC model Hindi without losing English.

    uv run ft_110M_enhi_demo.py                                  # offline demo: no checkpoint or data needed
    uv run ft_110M_enhi_demo.py init_from_nemo_model=parakeet-tdt_ctc-110m.nemo \
        model.train_ds.manifests='[{path: en.json, lang: en, weight: 0.5}, {path: hi.json, lang: hi, weight: 0.5}]' \
        model.validation_ds.sets='[{name: en, path: en_dev.json, lang: en}, {name: hi, path: hi_dev.json, lang: hi}]'

Settings live in ft_110M_enhi.yaml; any of its keys and any switch below can be overridden as key=value.
With neither init_from_* set, the offline demo synthesizes a bilingual corpus, starts from the shipped English
stand-in (assets/standin/) and compares the recipe against NeMo's plain change_vocabulary.
"""

import sys

from enhi.config import exit_with_help_if_asked, load_run_config
from enhi.errors import exit_on_user_error

# ---- switches: edit here, or override on the command line (e.g. `bnb_optim=true`) ----
bnb_optim = False  # bitsandbytes 8-bit AdamW: optimizer state in 8 bits (about 4x smaller), same update rule
using_birwkv7 = False  # replace encoder self-attention with BiRWKV7 (memory linear in audio length)
transplant = True  # carry English rows into the enlarged vocabulary; False = NeMo's plain change_vocabulary
adapt_only = False  # stop after the vocabulary change (+ transplant) and write the model to `save_to`
save_to = ""  # .nemo path written by adapt_only
verbose = False  # show NeMo's and Lightning's log messages on the terminal (they always go to the run's library.log)
retrain_standin = False  # offline demo only: train a new English stand-in (both stages, ~2 h on 2 cores) instead of the shipped one
config = "ft_110M_enhi.yaml"  # the YAML with data, model and trainer settings
SWITCHES = ["bnb_optim", "using_birwkv7", "transplant", "adapt_only", "save_to", "verbose", "retrain_standin", "config"]


@exit_on_user_error
def main(argv: list[str]) -> dict:
    exit_with_help_if_asked(argv, __doc__, {k: globals()[k] for k in SWITCHES})
    from enhi.console import phase, quiet_libraries, show_library_logs

    quiet_libraries()  # NeMo's and Lightning's messages go to the run's library.log (verbose=true shows them)
    from lightning.pytorch import seed_everything

    from demo import pipeline as demo
    from demo.common import DEMO_SETTINGS, history_path
    from enhi.datacheck import check_data
    from enhi.training import configure_model, evaluate_test_sets, fit, load_model, save_model
    from enhi.transplant import change_vocabulary

    sw, cfg = load_run_config({k: globals()[k] for k in SWITCHES}, config, argv)
    if sw["verbose"]:
        show_library_logs()
    offline_demo = not (cfg.init_from_pretrained_model or cfg.init_from_nemo_model)
    if offline_demo:  # CPU-sized settings (demo/common.py) under the command line's; corpus, stand-in, tokenizer
        _, cfg = load_run_config(sw, sw["config"], [*DEMO_SETTINGS, *argv])
        cfg = demo.prepare(cfg, retrain_standin=sw["retrain_standin"])  # all cached under demo_cache/
    if not sw["adapt_only"]:
        check_data(cfg)  # every manifest and audio header, before any model is loaded or folder written
    arms = demo.arms(sw["transplant"], offline_demo)  # the demo trains both arms on the same data and steps

    results = {}
    for arm in arms:
        run_cfg = demo.arm_config(cfg, arm) if offline_demo else cfg  # the demo's steps and output folders
        ad = run_cfg.model.adaptation
        with phase(f"{arm.name}: adapt the vocabulary"):
            seed_everything(cfg.seed, verbose=False)  # new layers are drawn identically in every process and run
            # 1. The pretrained model (or the demo's stand-in).
            model = load_model(cfg)
            # 2. Enlarge the vocabulary; with the transplant, every English row is carried across and new rows
            #    start from the English rows of their romanization (new_rows: romanized).
            info = change_vocabulary(model, cfg.model.tokenizer.dir, arm.transplant, ad.new_rows, ad.new_token_mass_bound)
            print(f"vocabulary {info['old_vocab_size']} -> {info['new_vocab_size']}, transplant={arm.transplant}"
                  + (f", {info['rows_borrowed']} new rows borrowed from romanizations" if info.get("rows_borrowed") else ""))
            # 3. Optionally swap encoder attention for BiRWKV7.
            if sw["using_birwkv7"]:
                from birwkv7.convert import convert_to_birwkv7

                model = convert_to_birwkv7(model, head_size=None, init="attention")  # heads as the attention had
            # 4. Loss, spec-augment, optimizer (8-bit with bnb_optim) from the YAML.
            configure_model(model, run_cfg, bnb_optim=sw["bnb_optim"])
        if sw["adapt_only"]:
            if not sw["save_to"]:
                from enhi.errors import UserError

                raise UserError("adapt_only=true needs save_to=PATH.nemo")
            print(f"adapted model written to {save_model(model, sw['save_to'])}")
            return {}
        # 5. Fine-tune on English + Hindi (pretrained weights slower, new rows faster: model.adaptation);
        #    validation WER/CER per language; checkpoints and final .nemo.
        with phase(f"{arm.name}: fine-tune"):
            # The curve starts anew unless this run may continue an interrupted one (exp_manager.resume_if_exists).
            fresh = offline_demo or not run_cfg.exp_manager.resume_if_exists
            _, val, timer = fit(model, run_cfg, history_path=history_path(run_cfg, fresh=fresh))
        results[arm.name] = demo.arm_results(run_cfg, val, timer)
        evaluate_test_sets(model, run_cfg)

    if offline_demo:  # table, transcripts and plot: stand-in before adaptation vs the recipe vs plain
        with phase("results"):
            demo.report(cfg, results)
    return results  # per arm: validation history, step times, examples, final .nemo (benchmarks read it)


if __name__ == "__main__":
    main(sys.argv[1:])
