"""Check every manifest of a run before training: per-language summary, and a one-line error for anything
that would break training (see enhi/datacheck.py for what is an error and what is a warning).

    uv run check_data.py                                    # the manifests in ft_110M_enhi.yaml
    uv run check_data.py config=my_run.yaml model.train_ds.max_duration=30

Takes the same YAML and key=value overrides as ft_110M_enhi_demo.py, which runs this check itself before
loading a model. Exit status 0 when training can start, 2 when it cannot.
"""

import sys

from enhi.config import exit_with_help_if_asked, load_run_config
from enhi.errors import exit_on_user_error

config = "ft_110M_enhi.yaml"  # the run's YAML; override with config=PATH


@exit_on_user_error
def main(argv: list[str]) -> None:
    exit_with_help_if_asked(argv, __doc__, {"config": config})
    from enhi.console import quiet_libraries

    quiet_libraries()  # NeMo's and OneLogger's import-time lines are not the user's business here
    from enhi.datacheck import check_data

    _, cfg = load_run_config({"config": config}, config, argv)
    check_data(cfg)
    print("data check passed")


if __name__ == "__main__":
    main(sys.argv[1:])
